//! Load harness library placeholder: the binary in main.rs holds the scenarios.
