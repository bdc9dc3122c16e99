//! The `wasm-oci` binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{COMPONENT, MODULE, json, tar_files, temp_path};

fn wasm_oci(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasm-oci"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("wasm-oci runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = temp_path(name);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn build_then_inspect() {
    let dir = TempDir::new("cli-build");
    std::fs::write(dir.0.join("hello.wasm"), MODULE).expect("write");
    std::fs::write(dir.0.join("settings.txt"), b"k=v").expect("write");
    let output = wasm_oci(
        &[
            "build",
            "--name",
            "docker.io/wasmrunner/hello:latest",
            "--flavour",
            "runwasi",
            "--env",
            "A=1",
            "--cmd",
            "--flag",
            "-o",
            "out.tar",
            "hello.wasm",
            "settings.txt:/etc/settings.txt",
        ],
        &dir.0,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = stdout(&output);
    assert!(
        summary.starts_with(
            "built docker.io/wasmrunner/hello:latest (runwasi, wasi/wasm) manifest sha256:"
        ),
        "{summary}"
    );
    assert!(summary.trim_end().ends_with("-> out.tar"), "{summary}");

    // The only wasm file became the entrypoint; FILE:PATH placed the other file.
    let archive = std::fs::read(dir.0.join("out.tar")).expect("archive");
    let files = tar_files(&archive);
    let index = json(&files["index.json"]);
    let manifest = json(common::follow(&files, &index["manifests"][0]));
    let config = json(common::follow(&files, &manifest["config"]));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/hello.wasm"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["--flag"]));
    assert_eq!(config["config"]["Env"], serde_json::json!(["A=1"]));
    let tar_layer = common::follow(&files, &manifest["layers"][0]);
    assert_eq!(tar_files(tar_layer)["etc/settings.txt"], b"k=v");

    let output = wasm_oci(&["inspect", "out.tar"], &dir.0);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("image docker.io/wasmrunner/hello:latest\n"),
        "{text}"
    );
    assert!(text.contains("entrypoint [\"/hello.wasm\"]"), "{text}");

    let output = wasm_oci(&["inspect", "out.tar", "--json"], &dir.0);
    assert!(output.status.success(), "{}", stderr(&output));
    let parsed = json(&output.stdout);
    assert_eq!(
        parsed["images"][0]["names"][0],
        "docker.io/wasmrunner/hello:latest"
    );
    assert_eq!(
        parsed["images"][0]["manifests"][0]["platform"]["os"],
        "wasi"
    );
    assert_eq!(
        parsed["images"][0]["manifests"][0]["layers"][1]["wasm"],
        "module"
    );
}

#[test]
fn cncf_with_a_component_and_explicit_platform() {
    let dir = TempDir::new("cli-cncf");
    std::fs::write(dir.0.join("app.wasm"), COMPONENT).expect("write");
    let output = wasm_oci(
        &[
            "build",
            "--name",
            "app:1",
            "--flavour",
            "cncf",
            "-o",
            "a.tar",
            "app.wasm",
        ],
        &dir.0,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("(cncf, wasip2/wasm)"));

    let output = wasm_oci(
        &[
            "build",
            "--name",
            "app:1",
            "--platform",
            "linux/arm64",
            "-o",
            "b.tar",
            "app.wasm",
        ],
        &dir.0,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("(image, linux/arm64)"));
}

#[test]
fn labels_and_annotations_from_the_command_line() {
    let dir = TempDir::new("cli-labels");
    std::fs::write(dir.0.join("app.wasm"), MODULE).expect("write");
    let output = wasm_oci(
        &[
            "build",
            "--name",
            "app:1",
            "--label",
            "wasmrunner.dev/env=APP_*",
            "--annotation",
            "wasmrunner.dev/files=/data:rw",
            "-o",
            "a.tar",
            "app.wasm",
        ],
        &dir.0,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let output = wasm_oci(&["inspect", "a.tar"], &dir.0);
    let text = stdout(&output);
    assert!(
        text.contains("    label wasmrunner.dev/env=APP_*\n"),
        "{text}"
    );
    assert!(
        text.contains("    annotation wasmrunner.dev/files=/data:rw\n"),
        "{text}"
    );
    let output = wasm_oci(
        &[
            "build", "--name", "app:1", "--label", "novalue", "-o", "b.tar", "app.wasm",
        ],
        &dir.0,
    );
    assert!(!output.status.success());
    assert_eq!(
        stderr(&output),
        "wasm-oci: invalid --label \"novalue\": expected K=V\n"
    );
}

#[test]
fn missing_input_file_is_a_one_line_error() {
    let dir = TempDir::new("cli-missing");
    let output = wasm_oci(
        &["build", "--name", "x:1", "-o", "out.tar", "hello.wasm"],
        &dir.0,
    );
    assert!(!output.status.success());
    assert_eq!(
        stderr(&output),
        "wasm-oci: reading hello.wasm: No such file or directory\n"
    );
    assert!(!dir.0.join("out.tar").exists());
}

#[test]
fn cncf_with_a_plain_file_fails() {
    let dir = TempDir::new("cli-cncf-plain");
    std::fs::write(dir.0.join("app.wasm"), MODULE).expect("write");
    std::fs::write(dir.0.join("notes.txt"), b"notes").expect("write");
    let output = wasm_oci(
        &[
            "build",
            "--name",
            "x:1",
            "--flavour",
            "cncf",
            "-o",
            "out.tar",
            "app.wasm",
            "notes.txt",
        ],
        &dir.0,
    );
    assert!(!output.status.success());
    assert_eq!(
        stderr(&output),
        "wasm-oci: building out.tar: /notes.txt is not a wasm binary; the cncf flavour only holds wasm files\n"
    );
}

#[test]
fn bad_arguments_are_rejected() {
    let dir = TempDir::new("cli-bad-args");
    std::fs::write(dir.0.join("app.wasm"), MODULE).expect("write");
    let bad_flavour = wasm_oci(
        &[
            "build",
            "--name",
            "x",
            "--flavour",
            "docker",
            "-o",
            "o.tar",
            "app.wasm",
        ],
        &dir.0,
    );
    assert!(!bad_flavour.status.success());
    assert!(
        stderr(&bad_flavour).contains("unknown flavour \"docker\""),
        "{}",
        stderr(&bad_flavour)
    );
    let bad_env = wasm_oci(
        &[
            "build", "--name", "x", "--env", "NOVALUE", "-o", "o.tar", "app.wasm",
        ],
        &dir.0,
    );
    assert!(!bad_env.status.success());
    assert_eq!(
        stderr(&bad_env),
        "wasm-oci: invalid --env \"NOVALUE\": expected K=V\n"
    );
    let relative = wasm_oci(
        &["build", "--name", "x", "-o", "o.tar", "app.wasm:app.wasm"],
        &dir.0,
    );
    assert_eq!(
        stderr(&relative),
        "wasm-oci: app.wasm:app.wasm: the path in the image (app.wasm) must be absolute, e.g. app.wasm:/app.wasm\n"
    );
    let no_target = wasm_oci(&["inspect"], &dir.0);
    assert!(!no_target.status.success());
}

#[test]
fn failing_ctr_reports_its_stderr() {
    let dir = TempDir::new("cli-ctr");
    // A fake ctr on PATH that fails the way ctr does for an unknown image.
    let fake = dir.0.join("ctr");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"ctr: image \\\"$9\\\": not found\" >&2\nexit 1\n",
    )
    .expect("write fake ctr");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let path = format!(
        "{}:{}",
        dir.0.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(env!("CARGO_BIN_EXE_wasm-oci"))
        .args([
            "inspect",
            "--image",
            "docker.io/x/y:1",
            "--address",
            "/nowhere.sock",
            "--namespace",
            "ns",
        ])
        .env("PATH", path)
        .output()
        .expect("wasm-oci runs");
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.starts_with("wasm-oci: inspecting image docker.io/x/y:1: ctr -a /nowhere.sock -n ns image export --all-platforms "), "{message}");
    assert!(
        message.trim_end().ends_with(
            "docker.io/x/y:1 failed (exit status: 1): ctr: image \"docker.io/x/y:1\": not found"
        ),
        "{message}"
    );
}
