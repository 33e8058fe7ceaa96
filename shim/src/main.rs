//! `containerd-shim-crius-v2`: argument parsing and wiring only; the logic is in the library.

fn main() {
    eprintln!("containerd-shim-crius-v2: not built yet");
    std::process::exit(1);
}
