//! `wasm-oci push`, `pull` and `tags` against a real registry: Debian's `docker-registry`
//! (the CNCF distribution registry) on a loopback port, started per test in a temp dir.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{MODULE, json};

/// A registry process and its storage; stopped and removed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    address: String,
}

impl Registry {
    /// Starts `docker-registry serve`, with htpasswd auth for `user` if given.
    fn start(user: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
            dir.path().join("data").display()
        );
        if let Some((name, password)) = user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", name, password])
                .output()
                .expect("htpasswd (apache2-utils) runs");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (apt-get install docker-registry)");
        let registry = Self {
            child,
            dir,
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&registry.address).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.address)
    }

    /// The stored data of blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wasm-oci <verb> --plain-http <args>`: the test registries speak plain HTTP.
fn plain_http(verb: &str, args: &[&str], dir: &Path) -> Output {
    let mut all = vec![verb, "--plain-http"];
    all.extend_from_slice(args);
    wasm_oci(&all, dir)
}

fn wasm_oci(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasm-oci"))
        .args(args)
        .current_dir(dir)
        .env("DOCKER_CONFIG", dir.join("no-docker-config"))
        .output()
        .expect("wasm-oci runs")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "wasm-oci failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails(output: Output) -> String {
    assert_eq!(output.status.code(), Some(1), "wasm-oci should fail");
    assert!(output.stdout.is_empty());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A work dir with a runwasi artifact (`wasm.tar`) and a linux/amd64 image of a 2 MiB file
/// (`native.tar`).
fn work_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hello.wasm"), MODULE).expect("write module");
    let big: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), big).expect("write file");
    for args in [
        ["--flavour", "runwasi", "-o", "wasm.tar", "hello.wasm"],
        ["--platform", "linux/amd64", "-o", "native.tar", "big.bin"],
    ] {
        let mut all = vec!["build", "--name", "t/hello:1", "--entrypoint", "/x"];
        all.extend(args);
        ok(wasm_oci(&all, dir.path()));
    }
    dir
}

#[test]
fn push_tags_pull_and_index() {
    let registry = Registry::start(None);
    let work = work_dir();
    let dir = work.path();
    let hello = registry.reference("wasm/hello:v1");
    let out = ok(plain_http("push", &["wasm.tar", &hello], dir));
    assert_eq!(out.matches(": uploaded").count(), 2, "{out}");
    assert!(out.contains(&format!("pushed {hello} sha256:")), "{out}");
    // Again, monolithic, under another tag: the blobs are there.
    let hello2 = registry.reference("wasm/hello:v2");
    let out = ok(plain_http(
        "push",
        &["--monolithic", "wasm.tar", &hello2],
        dir,
    ));
    assert_eq!(out.matches(": exists").count(), 2, "{out}");
    let tags = ok(plain_http(
        "tags",
        &[&registry.reference("wasm/hello")],
        dir,
    ));
    assert_eq!(tags, "v1\nv2\n");

    // Two archives: an index of wasi/wasm and linux/amd64, the big blob monolithic.
    let multi = registry.reference("wasm/multi:1");
    let out = ok(plain_http(
        "push",
        &["--monolithic", "wasm.tar", "native.tar", &multi],
        dir,
    ));
    assert!(
        out.contains("image.index.v1+json, wasi/wasm, linux/amd64"),
        "{out}"
    );
    // Another repository mounts the big layer instead of uploading it (chunked otherwise).
    let other = registry.reference("other/native:1");
    let out = ok(plain_http(
        "push",
        &["--mount-from", "wasm/multi", "native.tar", &other],
        dir,
    ));
    assert!(
        out.matches(": mounted from wasm/multi").count() == 2,
        "{out}"
    );

    let out = ok(plain_http("pull", &[&multi, "-o", "multi.tar"], dir));
    assert!(
        out.contains("(wasi/wasm, linux/amd64; 3 manifests, 4 blobs"),
        "{out}"
    );
    let inspection = json(&ok(wasm_oci(&["inspect", "--json", "multi.tar"], dir)).into_bytes());
    let image = &inspection["images"][0];
    assert_eq!(image["names"][0], multi.as_str());
    assert_eq!(image["manifests"].as_array().map(Vec::len), Some(2));
    // One platform of it, which becomes the image; byte for byte the archive pushed.
    let out = ok(plain_http(
        "pull",
        &["--platform", "wasi/wasm", &multi, "-o", "one.tar"],
        dir,
    ));
    assert!(out.contains("(wasi/wasm; 1 manifests, 2 blobs, "), "{out}");
    let pulled = json(&ok(wasm_oci(&["inspect", "--json", "one.tar"], dir)).into_bytes());
    let built = json(&ok(wasm_oci(&["inspect", "--json", "wasm.tar"], dir)).into_bytes());
    assert_eq!(
        pulled["images"][0]["manifests"], built["images"][0]["manifests"],
        "the pulled manifest differs from the pushed one"
    );
}

#[test]
fn failures_are_named_and_leave_no_file() {
    let registry = Registry::start(None);
    let work = work_dir();
    let dir = work.path();
    let hello = registry.reference("wasm/hello:v1");
    ok(plain_http("push", &["wasm.tar", &hello], dir));
    let no_file = |name: &str| {
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(name))
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    };

    let missing = registry.reference("wasm/hello:nope");
    let err = fails(plain_http("pull", &[&missing, "-o", "out.tar"], dir));
    assert!(
        err.contains(&format!("{missing} not found in the registry")),
        "{err}"
    );
    no_file("out.tar");

    let err = fails(wasm_oci(&["pull", &hello, "-o", "out.tar"], dir));
    assert!(err.contains("does not speak TLS: plain HTTP?"), "{err}");

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nowhere = format!("127.0.0.1:{port}/wasm/hello:v1");
    let err = fails(plain_http("pull", &[&nowhere, "-o", "out.tar"], dir));
    assert!(
        err.contains(&format!(
            "cannot reach registry 127.0.0.1:{port}: Connection refused"
        )),
        "{err}"
    );
    let err = fails(plain_http("push", &["wasm.tar", &nowhere], dir));
    assert!(err.contains("cannot reach registry"), "{err}");

    // The module's layer, changed in the registry's storage: the pull refuses it.
    let built = json(&ok(wasm_oci(&["inspect", "--json", "wasm.tar"], dir)).into_bytes());
    let layer = built["images"][0]["manifests"][0]["layers"][0]["digest"]
        .as_str()
        .expect("a layer digest")
        .to_owned();
    let stored = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&stored).expect("the stored blob");
    bytes[4] ^= 0xff;
    std::fs::write(&stored, bytes).expect("corrupt the blob");
    let err = fails(plain_http("pull", &[&hello, "-o", "out.tar"], dir));
    assert!(
        err.contains(&format!("blob {layer} has content with digest sha256:"))
            && err.contains("corrupt"),
        "{err}"
    );
    no_file("out.tar");

    let err = fails(plain_http(
        "push",
        &["wasm.tar", "127.0.0.1:1/UPPER:1"],
        dir,
    ));
    assert!(err.contains("invalid reference"), "{err}");
}

#[test]
fn credentials_from_flags_and_the_docker_config() {
    let registry = Registry::start(Some(("alice", "s3cret")));
    let work = work_dir();
    let dir = work.path();
    let hello = registry.reference("wasm/hello:v1");
    let err = fails(plain_http("push", &["wasm.tar", &hello], dir));
    assert!(
        err.contains(&format!(
            "registry {} refused the credentials (none were given): unauthorized",
            registry.address
        )),
        "{err}"
    );
    let err = fails(plain_http(
        "push",
        &["-u", "alice", "-p", "wrong", "wasm.tar", &hello],
        dir,
    ));
    assert!(
        err.contains("refused the credentials of user \"alice\""),
        "{err}"
    );
    ok(plain_http(
        "push",
        &["-u", "alice", "-p", "s3cret", "wasm.tar", &hello],
        dir,
    ));
    // docker login's file: base64("alice:s3cret") under the registry's host:port.
    let config = dir.join("docker/config.json");
    std::fs::create_dir_all(dir.join("docker")).expect("mkdir");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "YWxpY2U6czNjcmV0"}}}}}}"#,
            registry.address
        ),
    )
    .expect("write docker config");
    let config = config.to_string_lossy().into_owned();
    let tags = ok(plain_http(
        "tags",
        &[
            "--docker-config",
            &config,
            &registry.reference("wasm/hello"),
        ],
        dir,
    ));
    assert_eq!(tags, "v1\n");
    let out = Command::new(env!("CARGO_BIN_EXE_wasm-oci"))
        .args(["pull", "--plain-http", &hello, "-o", "p.tar"])
        .current_dir(dir)
        .env("DOCKER_CONFIG", dir.join("docker"))
        .output()
        .expect("wasm-oci runs");
    assert!(ok(out).contains("1 manifests, 2 blobs"));
}
