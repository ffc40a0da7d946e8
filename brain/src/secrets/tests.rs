#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn sealed_values_open_with_the_current_or_old_key_only() {
    let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let c1 = SecretsCipher::new(&k1, None);
    let sealed = c1.seal("-----BEGIN PRIVATE KEY-----");
    assert!(SecretsCipher::is_sealed(&sealed) && !sealed.contains("PRIVATE"));
    assert_ne!(sealed, c1.seal("-----BEGIN PRIVATE KEY-----"), "a fresh nonce each time");
    assert_eq!(c1.open(&sealed).unwrap(), "-----BEGIN PRIVATE KEY-----");
    let rotated = SecretsCipher::new(&k2, Some(&k1));
    assert_eq!(rotated.open(&sealed).unwrap(), "-----BEGIN PRIVATE KEY-----");
    assert!(!rotated.is_current(&sealed));
    let stranger = SecretsCipher::new(&k3, None);
    assert!(matches!(stranger.open(&sealed), Err(CipherError::UnknownKey(_))));
    let mut tampered = sealed.clone();
    tampered.pop();
    tampered.push('A');
    assert!(c1.open(&tampered).is_err());
    assert_eq!(c1.open("plain").unwrap(), "plain", "values written before encryption still read");
}

#[test]
fn keys_parse_from_hex_or_base64_and_wrong_lengths_are_named() {
    let hex = "00".repeat(32);
    assert_eq!(cipher::parse_key(&hex, "k").unwrap(), [0u8; 32]);
    let b64 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    assert_eq!(cipher::parse_key(b64, "k").unwrap(), [1u8; 32]);
    let err = cipher::parse_key("c2hvcnQ=", "/etc/flotilla/key").unwrap_err().to_string();
    assert!(err.contains("/etc/flotilla/key") && err.contains("32 bytes"), "{err}");
}
