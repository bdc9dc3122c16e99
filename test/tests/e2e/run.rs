//! A module runs, sees its args, env and files, and its exit status reaches the user.

use std::time::Duration;

use anyhow::{Result, ensure};
use wasmrunner_e2e::engine::Engine;
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{GREETING, HELLO, TestImage};
use wasmrunner_e2e::{Case, Env};
use wasmrunner_oci::Flavour;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("hello", hello),
        Case::new("args_and_env", args_and_env),
        Case::new("reads_a_file_from_the_image", reads_a_file_from_the_image),
        Case::new("writes_a_file_in_its_rootfs", writes_a_file_in_its_rootfs),
        Case::new("exit_status_is_propagated", exit_status_is_propagated),
        Case::new("wasip2_component", wasip2_component),
        Case::new("native_executable", native_executable),
        Case::new("output_survives_a_rebuild", output_survives_a_rebuild),
        Case::new("slow_reader_gets_all_output", slow_reader_gets_all_output),
    ]
}

/// How many 64 KiB args [`slow_reader_gets_all_output`] has printed back: 512 KiB, far more
/// than the fifo (64 KiB), `ctr`'s copy buffer (32 KiB) and `ctr`'s stdout pipe (64 KiB) hold.
const SLOW_READER_ARGS: usize = 8;

/// Output still in the fifo when the workload exits reaches `ctr` whole, however slowly `ctr`
/// gets it read. `ctr` (containerd's client) closes its end of the fifos once it hears of the
/// exit, so the shim tells the exit only once the fifos are read. Here `ctr`'s own stdout is
/// read 4 KiB every 10 ms: without that wait, the last ~100 KiB were lost every time.
fn slow_reader_gets_all_output(env: &Env) -> Result<()> {
    let lines: Vec<String> = (0..SLOW_READER_ARGS)
        .map(|i| char::from(b'a' + i as u8).to_string().repeat(64 * 1024))
        .collect();
    let mut args = vec!["/probe.wasm", "args"];
    args.extend(lines.iter().map(String::as_str));
    let id = env.container_id("slow-reader");
    let out = env
        .run_rm_read_slowly(
            &id,
            TestImage::Probe(Target::WasiP1),
            &[],
            &args,
            Duration::from_millis(10),
        )?
        .ok()?;
    for (i, line) in lines.iter().enumerate() {
        let expected = format!("arg[{}]={line}", i + 2);
        ensure!(
            out.stdout.lines().any(|l| l == expected),
            "arg {} did not reach ctr whole: {} bytes of stdout arrived",
            i + 2,
            out.stdout.len()
        );
    }
    Ok(())
}

/// A container built twice (its first build lost libcontainer's start-up race: injected
/// here) still gets its output to `ctr`: the first build's init dies, and that must not end
/// containerd's copy of the fifo before the second one writes.
fn output_survives_a_rebuild(env: &Env) -> Result<()> {
    let id = env.container_id("rebuilt");
    let (key, value) = Engine::FAULT_STARTUP_RACE;
    let fault = format!("{key}={value}");
    let out = env
        .run_rm_as(
            &id,
            TestImage::Hello(Target::WasiP1, Flavour::Image),
            &["--env", &fault],
            &[],
        )?
        .ok()?;
    ensure!(
        out.stdout.trim_end() == HELLO,
        "the rebuilt container's output was lost: {out}"
    );
    if env.engine.logs_reach_containerd() {
        ensure!(
            env.containerd.log_mentions(&Engine::rebuild_log_line(&id)),
            "containerd's log shows no rebuild of {id}: the fault was not injected\n{}",
            env.containerd.log_tail()
        );
    }
    Ok(())
}

fn hello(env: &Env) -> Result<()> {
    let out = env
        .run_rm(TestImage::Hello(Target::WasiP1, Flavour::Image), &[])?
        .ok()?;
    ensure!(out.stdout.trim_end() == HELLO, "unexpected output: {out}");
    Ok(())
}

fn args_and_env(env: &Env) -> Result<()> {
    let out = env
        .run_rm_with(
            TestImage::Probe(Target::WasiP1),
            &["--env", "GREETING=hi there", "--env", "EMPTY="],
            &["/probe.wasm", "args", "one", "two words"],
        )?
        .ok()?;
    // `ctr run IMAGE ID ARGS...` replaces the whole process args, entrypoint included.
    let expected = "arg[0]=/probe.wasm\narg[1]=args\narg[2]=one\narg[3]=two words\n";
    ensure!(out.stdout == expected, "unexpected args: {out}");

    let out = env
        .run_rm_with(
            TestImage::Probe(Target::WasiP1),
            &["--env", "GREETING=hi there", "--env", "EMPTY="],
            &["/probe.wasm", "env", "GREETING", "EMPTY", "NOT_SET"],
        )?
        .ok()?;
    ensure!(
        out.stdout == "GREETING=hi there\nEMPTY=\nNOT_SET unset\n",
        "unexpected env: {out}"
    );
    Ok(())
}

fn reads_a_file_from_the_image(env: &Env) -> Result<()> {
    let out = env
        .run_rm(
            TestImage::Probe(Target::WasiP1),
            &["/probe.wasm", "cat", "/data/greeting.txt"],
        )?
        .ok()?;
    ensure!(out.stdout == GREETING, "unexpected file contents: {out}");
    Ok(())
}

fn writes_a_file_in_its_rootfs(env: &Env) -> Result<()> {
    let out = env
        .run_rm(
            TestImage::Probe(Target::WasiP1),
            &[
                "/probe.wasm",
                "write",
                "/data/written.txt",
                "written inside the container",
            ],
        )?
        .ok()?;
    ensure!(
        out.stdout == "wrote /data/written.txt: written inside the container\n",
        "unexpected output: {out}"
    );
    // The next container starts from the image again: the write stayed in its own rootfs.
    let out = env
        .run_rm(
            TestImage::Probe(Target::WasiP1),
            &["/probe.wasm", "cat", "/data/written.txt"],
        )?
        .expect_status(2)?;
    ensure!(
        out.stderr.contains("cat /data/written.txt"),
        "unexpected output: {out}"
    );
    Ok(())
}

fn exit_status_is_propagated(env: &Env) -> Result<()> {
    env.run_rm(
        TestImage::Probe(Target::WasiP1),
        &["/probe.wasm", "exit", "7"],
    )?
    .expect_status(7)?;
    env.run_rm(
        TestImage::Probe(Target::WasiP1),
        &["/probe.wasm", "exit", "0"],
    )?
    .expect_status(0)?;
    Ok(())
}

/// Components run on engines that run them, and fail with a clear error on the others.
fn wasip2_component(env: &Env) -> Result<()> {
    if !env.engine.runs_components() {
        env.run_rm(TestImage::Hello(Target::WasiP2, Flavour::Image), &[])?
            .expect_status(126)?
            .expect_output(Engine::COMPONENT_REFUSAL)?
            .expect_output("/hello.wasm")?;
        return Ok(());
    }
    let out = env
        .run_rm(TestImage::Hello(Target::WasiP2, Flavour::Image), &[])?
        .ok()?;
    ensure!(out.stdout.trim_end() == HELLO, "unexpected output: {out}");
    let out = env
        .run_rm(
            TestImage::Probe(Target::WasiP2),
            &["/probe.wasm", "cat", "/data/greeting.txt"],
        )?
        .ok()?;
    ensure!(out.stdout == GREETING, "unexpected file contents: {out}");
    // WASI preview 2's `wasi:cli/exit` carries success or failure, not a number: a
    // component's non-zero exit is status 1.
    env.run_rm(
        TestImage::Probe(Target::WasiP2),
        &["/probe.wasm", "exit", "3"],
    )?
    .expect_status(1)?;
    Ok(())
}

fn native_executable(env: &Env) -> Result<()> {
    let out = env
        .run_rm(TestImage::Hello(Target::Native, Flavour::Image), &[])?
        .ok()?;
    ensure!(out.stdout.trim_end() == HELLO, "unexpected output: {out}");
    Ok(())
}
