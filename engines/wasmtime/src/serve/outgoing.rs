//! A served guest's outgoing HTTP (`wasi:http/outgoing-handler`), held to the pod's network
//! grant.
//!
//! The host, not the guest, opens these connections, so Wasmtime's socket check (which holds
//! the guest's own `wasi:sockets` to the grant) never sees them: this hook does the same
//! check. Under `network = all` the request goes out as Wasmtime sends it. Under a rule list
//! the destination is resolved here once (only with `lookup` granted, for a name), the first
//! address the rules allow to `connect` is picked, and the request is sent to that address
//! itself, with the name kept in its `Host` header: a second lookup cannot send it elsewhere.
//! HTTPS to a name cannot be pinned that way (the certificate is checked against the
//! name), so under a rule list it is refused; HTTPS to an address is sent.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::Uri;
use http::uri::Scheme;
use http_body_util::BodyExt;
use wasmrunner_shim::capabilities::{Network, SocketUse};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// What a store's `wasi:http` calls ask before a request goes out.
pub(crate) struct PolicyHooks {
    network: Arc<Network>,
}

impl PolicyHooks {
    pub(crate) fn new(network: &Network) -> Self {
        Self {
            network: Arc::new(network.clone()),
        }
    }
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for PolicyHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        // Wasmtime's own sender does not use it either: it reports on the response body.
        drop(fut);
        let network = self.network.clone();
        Box::new(async move {
            let request = pinned(&network, request).await?;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// `request`, sent to an address `network` allows, or the reason it may not go out.
async fn pinned(
    network: &Network,
    mut request: http::Request<WasiBody>,
) -> Result<http::Request<WasiBody>, Error> {
    if let Network::All = network {
        return Ok(request);
    }
    let uri = request.uri();
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let candidates: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) if !network.allows_lookup() || tls => return Err(Error::HttpRequestDenied),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Error::DestinationNotFound)?
            .collect(),
    };
    let address = candidates
        .into_iter()
        .find(|address| network.allows(*address, SocketUse::Connect))
        .ok_or(Error::DestinationIpProhibited)?;
    let mut parts = request.uri().clone().into_parts();
    parts.authority = Some(
        address
            .to_string()
            .parse()
            .map_err(|_| Error::HttpRequestUriInvalid)?,
    );
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use wasmrunner_shim::capabilities::{Origin, Statement};

    fn request(uri: &str) -> http::Request<WasiBody> {
        let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
        http::Request::builder()
            .uri(uri)
            .body(body)
            .expect("request")
    }

    fn rules(text: &str) -> Network {
        let grant = [("wasmrunner.dev/network", text)];
        Statement::parse(Origin::Grant, grant)
            .expect("rules")
            .network
            .expect("a network key")
    }

    #[tokio::test]
    async fn a_request_goes_only_to_an_address_the_rules_allow() {
        let network = rules("connect=127.0.0.1:8080");
        let sent = pinned(&network, request("http://127.0.0.1:8080/x")).await;
        assert_eq!(
            sent.expect("allowed").uri().to_string(),
            "http://127.0.0.1:8080/x"
        );
        for uri in ["http://127.0.0.1:8081/", "http://10.0.0.1:8080/"] {
            let refused = pinned(&network, request(uri)).await;
            assert!(
                matches!(refused, Err(Error::DestinationIpProhibited)),
                "{uri}: {refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_name_needs_lookup_and_is_pinned_to_the_checked_address() {
        let without = rules("connect=127.0.0.1:8080");
        let refused = pinned(&without, request("http://localhost:8080/")).await;
        assert!(
            matches!(refused, Err(Error::HttpRequestDenied)),
            "{refused:?}"
        );
        let with = rules("connect=127.0.0.1:8080,lookup");
        let sent = pinned(&with, request("http://localhost:8080/y"))
            .await
            .expect("localhost resolves to an allowed address");
        assert_eq!(sent.uri().to_string(), "http://127.0.0.1:8080/y");
        let tls = pinned(&with, request("https://localhost:8080/")).await;
        assert!(matches!(tls, Err(Error::HttpRequestDenied)), "{tls:?}");
    }

    #[tokio::test]
    async fn everything_goes_out_unchanged_under_network_all() {
        let sent = pinned(&Network::All, request("https://example.com/z"))
            .await
            .expect("all");
        assert_eq!(sent.uri().to_string(), "https://example.com/z");
    }
}
