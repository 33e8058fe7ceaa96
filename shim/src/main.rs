//! `containerd-shim-crius-v2`: argument parsing and wiring only; the logic is in the library.

use std::io::Write;
use std::process::ExitCode;

use crius_shim::args::{Action, Args};
use crius_shim::{cleanup, log, serve, start};

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("containerd-shim-crius-v2: {e}");
            return ExitCode::from(2);
        }
    };
    log::set_debug(args.debug);
    let result = match args.action {
        Action::Version => {
            println!("containerd-shim-crius-v2 {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Action::Start => start::start(&args).and_then(|address| {
            let mut out = std::io::stdout();
            out.write_all(address.as_bytes())?;
            out.flush()?;
            Ok(())
        }),
        Action::Delete => block_on(cleanup::delete(&args)).and_then(|bytes| {
            let mut out = std::io::stdout();
            out.write_all(&bytes)?;
            out.flush()?;
            Ok(())
        }),
        Action::Serve => block_on(serve::serve(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(&format!("{:?} {}: {e:#}", args.action, args.id));
            eprintln!("containerd-shim-crius-v2: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}
