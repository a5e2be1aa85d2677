//! The camgate binary: command line only; everything else lives in the library.

fn main() {
    println!("camgate {}", env!("CARGO_PKG_VERSION"));
}
