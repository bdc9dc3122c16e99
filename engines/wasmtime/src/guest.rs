//! A guest's store and WASI context, as its capabilities make them: what a command
//! (`sandbox`) and each request of a served component (`serve`) run in.

use std::sync::Arc;

use wasmrunner_shim::WorkloadError;
use wasmrunner_shim::capabilities::{Capabilities, Network, SocketUse};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What a store holds beside the guest's WASI context: the limits its policy sets.
pub(crate) struct Guest<T> {
    pub(crate) wasi: T,
    limits: StoreLimits,
}

/// A store whose `ResourceLimiter` holds the guest to `caps`' memory, table and instance
/// limits.
pub(crate) fn limited_store<T: 'static>(
    engine: &Engine,
    caps: &Capabilities,
    wasi: T,
) -> Store<Guest<T>> {
    let mut limits = StoreLimitsBuilder::new();
    if let Some(bytes) = caps.memory {
        limits = limits.memory_size(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    if let Some(elements) = caps.tables {
        limits = limits.table_elements(elements as usize);
    }
    if let Some(instances) = caps.instances {
        limits = limits.instances(instances as usize);
    }
    let mut store = Store::new(
        engine,
        Guest {
            wasi,
            limits: limits.build(),
        },
    );
    store.limiter(|guest| &mut guest.limits);
    store
}

/// The guest's WASI context: its args and env, the container's stdio, and what its
/// capabilities let it reach.
pub(crate) fn wasi_builder(
    args: &[String],
    env: &[(String, String)],
    caps: &Capabilities,
) -> Result<WasiCtxBuilder, WorkloadError> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(args).envs(env).inherit_stdio();
    allow_network(&mut builder, &caps.network);
    // Paths are the container's: its rootfs is this process's `/`.
    for preopen in &caps.files.0 {
        let perms = if preopen.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&preopen.path, &preopen.guest, perms)
            .map_err(|e| WorkloadError::Policy(format!("cannot preopen {preopen}: {e:#}")))?;
    }
    Ok(builder)
}

/// Wasmtime checks every address a guest socket binds, connects or sends to; the check
/// answers from the policy, so a denied call fails inside the guest with `access-denied`.
fn allow_network(builder: &mut WasiCtxBuilder, network: &Network) {
    builder.allow_ip_name_lookup(network.allows_lookup());
    // TCP and UDP are off in a new builder: each is on exactly when the policy allows a socket.
    builder.allow_tcp(network.allows_sockets());
    builder.allow_udp(network.allows_sockets());
    if let Network::All = network {
        builder.inherit_network();
        return;
    }
    let network = Arc::new(network.clone());
    builder.socket_addr_check(move |addr, usage| {
        let how = match usage {
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => SocketUse::Bind,
            SocketAddrUse::TcpListen => SocketUse::Listen,
            SocketAddrUse::TcpAccept => SocketUse::Accept,
            SocketAddrUse::UdpReceive => SocketUse::Receive,
            SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend => SocketUse::Connect,
        };
        let allowed = network.allows(addr, how);
        Box::pin(async move { allowed })
    });
}
