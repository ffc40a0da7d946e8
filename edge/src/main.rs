fn main() {
    eprintln!(
        "flotilla-edge: the distributed edge needs --nats-url, which is not implemented yet; run flotilla-brain (embedded edge) instead"
    );
    std::process::exit(2);
}
