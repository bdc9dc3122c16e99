//! The runtime's options: `[... .runtimes.<handler>.options]` in containerd's config, sent
//! with every Create.
//!
//! containerd sends runc's own runtime type `containerd.runc.v1.Options`; for any other
//! runtime type (ours) under CRI it sends `runtimeoptions.v1.Options`, whose `config_body`
//! holds the handler's options table as TOML (`SystemdCgroup = true` on a node whose kubelet
//! uses the systemd cgroup driver: kind and kubeadm by default). Both are read.

use containerd_shim::TtrpcResult;
use containerd_shim::api::{CreateTaskRequest, Options as RuncOptions};
use containerd_shim::protos::protobuf::{CodedInputStream, Message};
use containerd_shim::protos::ttrpc;

use super::status;

/// What the shim takes from the runtime's options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Let systemd manage the container's cgroups: `cgroupsPath` is then systemd's
    /// `slice:prefix:name`, not a cgroupfs path.
    pub systemd_cgroup: bool,
}

/// The options table of `runtimeoptions.v1.Options`'s TOML `config_body`.
#[derive(Debug, Default, serde::Deserialize)]
struct OptionsTable {
    #[serde(default, rename = "SystemdCgroup")]
    systemd_cgroup: bool,
}

pub fn runtime_options(req: &CreateTaskRequest) -> TtrpcResult<RuntimeOptions> {
    let invalid = |e: String| {
        status(
            ttrpc::Code::INVALID_ARGUMENT,
            format!("runtime options: {e}"),
        )
    };
    let Some(any) = req.options.as_ref() else {
        return Ok(RuntimeOptions::default());
    };
    let type_url = any.type_url.trim_start_matches("type.googleapis.com/");
    let systemd_cgroup = match type_url {
        "containerd.runc.v1.Options" => {
            RuncOptions::parse_from_bytes(&any.value)
                .map_err(|e| invalid(e.to_string()))?
                .systemd_cgroup
        }
        "runtimeoptions.v1.Options" => {
            let body = config_body(&any.value).map_err(invalid)?;
            toml::from_str::<OptionsTable>(&body)
                .map_err(|e| invalid(format!("the options table is not valid TOML: {e}")))?
                .systemd_cgroup
        }
        _ => false,
    };
    Ok(RuntimeOptions { systemd_cgroup })
}

/// Field 3 (`config_body`, a string) of a `runtimeoptions.v1.Options` message; the other
/// fields (`type_url`, `config_path`) are skipped.
fn config_body(message: &[u8]) -> Result<String, String> {
    const CONFIG_BODY: u32 = 3;
    const LENGTH_DELIMITED: u32 = 2;
    let mut input = CodedInputStream::from_bytes(message);
    let mut body = String::new();
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(|e| e.to_string())? {
        let (field, wire) = (tag >> 3, tag & 7);
        if field == CONFIG_BODY && wire == LENGTH_DELIMITED {
            body = input.read_string().map_err(|e| e.to_string())?;
            continue;
        }
        let wire_type = containerd_shim::protos::protobuf::rt::WireType::new(wire)
            .ok_or_else(|| format!("unknown wire type {wire}"))?;
        input.skip_field(wire_type).map_err(|e| e.to_string())?;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use containerd_shim::protos::protobuf::well_known_types::any::Any;
    use containerd_shim::protos::protobuf::{CodedOutputStream, MessageField};

    use super::*;

    /// A `runtimeoptions.v1.Options` as containerd's CRI plugin sends it.
    fn runtimeoptions(config_body: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "runtimeoptions.v1.Options")
                .expect("type_url");
            out.write_string(2, "").expect("config_path");
            out.write_string(3, config_body).expect("config_body");
            out.flush().expect("flush");
        }
        Any {
            type_url: "runtimeoptions.v1.Options".to_string(),
            value,
            ..Default::default()
        }
    }

    fn request(options: Option<Any>) -> CreateTaskRequest {
        CreateTaskRequest {
            options: MessageField::from_option(options),
            ..Default::default()
        }
    }

    #[test]
    fn systemd_cgroup_comes_through_cris_runtime_options() {
        let on = runtime_options(&request(Some(runtimeoptions(
            "BinaryName = \"\"\nSystemdCgroup = true\n",
        ))))
        .expect("options");
        assert!(on.systemd_cgroup);
        let off = runtime_options(&request(Some(runtimeoptions("")))).expect("options");
        assert!(!off.systemd_cgroup);
    }

    #[test]
    fn runcs_own_options_are_read_too() {
        let value = RuncOptions {
            systemd_cgroup: true,
            ..Default::default()
        }
        .write_to_bytes()
        .expect("encode");
        let any = Any {
            type_url: "containerd.runc.v1.Options".to_string(),
            value,
            ..Default::default()
        };
        assert!(
            runtime_options(&request(Some(any)))
                .expect("options")
                .systemd_cgroup
        );
        assert_eq!(
            runtime_options(&request(None)).expect("options"),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn a_bad_options_table_is_refused_with_the_reason() {
        let err = runtime_options(&request(Some(runtimeoptions("SystemdCgroup = ")))).unwrap_err();
        assert!(err.to_string().contains("not valid TOML"), "{err}");
    }
}
