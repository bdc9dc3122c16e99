//! Released programs other people wrote ([`wasmrunner_e2e::third_party`]) run as a user runs
//! them, with the output and exit statuses their authors documented.

use anyhow::{Result, ensure};
use wasmrunner_e2e::images::{GREETING, NOTE_A, NOTE_B, TestImage};
use wasmrunner_e2e::{Case, Env};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("ripgrep_searches_a_tree", ripgrep_searches_a_tree),
        Case::new("ripgrep_config_from_env", ripgrep_config_from_env),
        Case::new("ripgrep_exit_statuses", ripgrep_exit_statuses),
        Case::new("hexyl_dumps_and_seeks", hexyl_dumps_and_seeks),
    ]
}

/// The line of `text` (1-based number and text) that holds `word`.
fn line_with(text: &str, word: &str) -> (usize, String) {
    text.lines()
        .enumerate()
        .find(|(_, line)| line.contains(word))
        .map(|(i, line)| (i + 1, line.to_string()))
        .unwrap_or_default()
}

/// ripgrep walks `/data` (a tree of directories in the image) and prints each match as
/// `path:line:text`: the form it uses when its stdout is not a terminal, as it is not here
/// (containerd's fifo). A runtime that tells the guest its stdout is a terminal gets
/// ripgrep's terminal form (a heading per file) instead.
fn ripgrep_searches_a_tree(env: &Env) -> Result<()> {
    let (number, line) = line_with(NOTE_A, "needle");
    search_data(env, &[], &format!("/data/notes/a.txt:{number}:{line}\n"))
}

/// `RIPGREP_CONFIG_PATH` from the container's environment names `/data/rgrc`
/// (`--ignore-case`): `Needle` in the second file matches too.
fn ripgrep_config_from_env(env: &Env) -> Result<()> {
    let (a_number, a_line) = line_with(NOTE_A, "needle");
    let (b_number, b_line) = line_with(NOTE_B, "Needle");
    search_data(
        env,
        &["--env", "RIPGREP_CONFIG_PATH=/data/rgrc"],
        &format!(
            "/data/notes/a.txt:{a_number}:{a_line}\n/data/notes/deep/b.md:{b_number}:{b_line}\n"
        ),
    )
}

/// `rg -n --sort path needle /data`, with `flags` for `ctr run`: exits 0 and prints
/// `expected`, nothing else.
fn search_data(env: &Env, flags: &[&str], expected: &str) -> Result<()> {
    let out = env
        .run_rm_with(
            TestImage::ThirdParty,
            flags,
            &["/rg.wasm", "-n", "--sort", "path", "needle", "/data"],
        )?
        .ok()?;
    ensure!(
        out.stdout == expected,
        "ripgrep printed {:?}, not {expected:?}: {out}",
        out.stdout
    );
    Ok(())
}

/// ripgrep's documented statuses: 1 when nothing matches (and nothing printed), 2 when a
/// path cannot be searched (and the error names it).
fn ripgrep_exit_statuses(env: &Env) -> Result<()> {
    let none = env
        .run_rm(
            TestImage::ThirdParty,
            &["/rg.wasm", "no-such-word", "/data"],
        )?
        .expect_status(1)?;
    ensure!(
        none.stdout.is_empty(),
        "ripgrep printed something without a match: {none}"
    );
    env.run_rm(TestImage::ThirdParty, &["/rg.wasm", "needle", "/nowhere"])?
        .expect_status(2)?
        .expect_output("/nowhere")?;
    Ok(())
}

/// hexyl prints every byte of the file, and with `--skip`/`--length` only the bytes from an
/// offset on (it seeks there).
fn hexyl_dumps_and_seeks(env: &Env) -> Result<()> {
    let hex_bytes = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .filter(|token| token.len() == 2 && token.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
            .collect()
    };
    let of = |bytes: &[u8]| -> Vec<String> { bytes.iter().map(|b| format!("{b:02x}")).collect() };

    let whole = env
        .run_rm(
            TestImage::ThirdParty,
            &["/hexyl.wasm", "--plain", "/data/greeting.txt"],
        )?
        .ok()?;
    ensure!(
        hex_bytes(&whole.stdout) == of(GREETING.as_bytes()),
        "hexyl's dump is not the file's bytes: {whole}"
    );
    let (skip, length) = (6, 4);
    let part = env
        .run_rm(
            TestImage::ThirdParty,
            &[
                "/hexyl.wasm",
                "--plain",
                "--skip",
                &skip.to_string(),
                "--length",
                &length.to_string(),
                "/data/greeting.txt",
            ],
        )?
        .ok()?;
    ensure!(
        hex_bytes(&part.stdout) == of(&GREETING.as_bytes()[skip..skip + length]),
        "hexyl's dump from byte {skip} is not the file's bytes there: {part}"
    );
    Ok(())
}
