//! The `cmkfs` binary: all logic lives in the library; see `cmkfs::cli`.

fn main() {
    if let Err(e) = cmkfs::cli::run() {
        eprintln!("cmkfs: error: {e:#}");
        std::process::exit(1);
    }
}
