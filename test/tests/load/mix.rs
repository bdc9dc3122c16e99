//! The tasks of the mix: how each is run through `ctr` and how it must end.

use std::time::Duration;

use anyhow::{Result, ensure};
use wasmrunner_e2e::Env;
use wasmrunner_e2e::command::run_command_within;
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{HELLO, TestImage};

/// The probe, for the tasks that do more than say hello.
pub const PROBE: TestImage = TestImage::Probe(Target::WasiP1);
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// The status the exiting task chooses.
const OWN_STATUS: i32 = 3;

/// One kind of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ctr run --rm` of the hello image: prints its line, exits 0.
    Hello,
    /// The probe exits with a status of its own ([`OWN_STATUS`]).
    OwnStatus,
    /// The probe grows its memory past a 16 MiB cap (`wasmrunner.dev/memory`): the
    /// allocation fails inside the guest, which aborts: a trap, status 134.
    Trap,
    /// The probe sleeps until `ctr task kill -s SIGKILL`: status 137, then the container
    /// is deleted.
    Killed,
}

impl Kind {
    /// Task `i`'s kind: of every ten, seven say hello, then one of each other kind.
    pub fn of(i: usize) -> Kind {
        match i % 10 {
            7 => Kind::OwnStatus,
            8 => Kind::Trap,
            9 => Kind::Killed,
            _ => Kind::Hello,
        }
    }

    /// Runs one task of this kind and checks how it ended. `hello` is the hello image's
    /// reference, imported already.
    pub fn run(self, env: &Env, hello: &str) -> Result<()> {
        match self {
            Kind::Hello => {
                let id = env.container_id("load");
                let mut command = env.containerd.ctr_command();
                command.args([
                    "run",
                    "--rm",
                    "--runtime",
                    &env.engine.runtime(),
                    hello,
                    &id,
                ]);
                let outcome = run_command_within(&mut command, RUN_LIMIT)?;
                ensure!(
                    outcome.success() && outcome.stdout.lines().any(|line| line == HELLO),
                    "{id}: lost its output or failed: {}",
                    outcome.output()
                );
            }
            Kind::OwnStatus => {
                let status = OWN_STATUS.to_string();
                env.run_rm(PROBE, &["/probe.wasm", "exit", &status])?
                    .expect_status(OWN_STATUS)?;
            }
            Kind::Trap => {
                env.run_rm_with(
                    PROBE,
                    &["--annotation", "wasmrunner.dev/memory=16Mi"],
                    &["/probe.wasm", "grow"],
                )?
                .expect_status(134)?
                .expect_output("memory allocation")?;
            }
            Kind::Killed => {
                env.start_attached(PROBE, &["/probe.wasm", "sleep"])?
                    .kill_and_remove(env, RUN_LIMIT)?;
            }
        }
        Ok(())
    }
}
