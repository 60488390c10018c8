//! `taskpoll`: read, wait on and watch tasks at any provider built into the
//! crate; run the offline simulator; run the demo.
//!
//! Exit codes: 0 all succeeded, 1 a task failed (or was cancelled), 2 the
//! deadline passed first, 3 usage or configuration error, 4 API, auth or
//! transport error, 130 interrupted by Ctrl-C.

#![allow(clippy::disallowed_methods)] // reads real time: the command line's progress display

mod args;
mod demo;
mod error;
mod interrupts;
mod output;
mod receive;
mod state_file;
mod stored;
mod telemetry;
mod waiting;

use std::process::ExitCode;

use clap::Parser as _;

use args::{Cli, Command};
use output::Exit;

fn main() -> ExitCode {
    run_with(std::env::args_os())
}

/// Runs the command line `args` (the program name first); `examples/demo.rs` calls it too.
pub(crate) fn run_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => Exit::Usage as u8,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Err(e) = telemetry::init_logs(cli.verbose, cli.log_format) {
        output::err_line(&format!("taskpoll: {e}"));
        return ExitCode::from(e.exit() as u8);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            output::err_line(&format!("taskpoll: cannot start the async runtime: {e}"));
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let exit = runtime.block_on(run(cli));
    ExitCode::from(exit as u8)
}

async fn run(cli: Cli) -> Exit {
    if let Some(addr) = cli.metrics_listen
        && let Err(e) = telemetry::serve_metrics(addr).await
    {
        output::err_line(&format!("taskpoll: {e}"));
        return e.exit();
    }
    let result = match cli.command {
        Command::Get(task_args) => waiting::get(task_args).await,
        Command::Wait(wait_args) => waiting::wait(wait_args).await,
        Command::Watch(wait_args) => waiting::watch(wait_args).await,
        Command::Resume(resume_args) => waiting::resume(resume_args).await,
        Command::Simulate { port } => demo::simulate(port).await,
        Command::Demo => demo::demo().await,
        Command::Outcomes(args) => stored::outcomes(args).await,
        Command::Receive(args) => receive::receive(args).await,
    };
    match result {
        Ok(exit) => exit,
        Err(e) => {
            output::err_line(&format!("taskpoll: {e}"));
            e.exit()
        }
    }
}
