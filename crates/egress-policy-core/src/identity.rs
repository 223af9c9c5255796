//! Source identity from the mTLS peer certificate (README: Security).
//!
//! The only input is what Envoy verified: the URI SANs of a client certificate that chained to
//! the mesh CA. A SPIFFE ID is parsed exactly (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, nothing
//! more, nothing less) and its trust domain must be the configured one. Anything else yields no
//! identity and a reason, which the filter logs; it never yields a partial identity.

use std::fmt;

/// Who the caller is, from its certificate: parts of the SPIFFE ID it was parsed from, which is
/// the principal itself (the parse is exact, so nothing is rebuilt or copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The whole SPIFFE ID: `spiffe://cluster.local/ns/default/sa/sleep`.
    pub principal: &'a str,
    pub trust_domain: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
}

/// Why a certificate gave no identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The certificate has more than one URI SAN: which one speaks for the caller is ambiguous.
    SeveralUriSans(usize),
    /// The URI SAN is not a SPIFFE ID of the form `spiffe://<td>/ns/<ns>/sa/<sa>`.
    Malformed(&'static str),
    /// The SPIFFE ID belongs to another trust domain.
    ForeignTrustDomain(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::SeveralUriSans(n) => {
                write!(
                    f,
                    "peer certificate has {n} URI SANs; exactly one SPIFFE ID is required"
                )
            }
            IdentityError::Malformed(why) => {
                write!(f, "peer certificate URI SAN is not a SPIFFE ID: {why}")
            }
            IdentityError::ForeignTrustDomain(td) => {
                write!(
                    f,
                    "peer certificate SPIFFE ID is from trust domain {td:?}, not the configured one"
                )
            }
        }
    }
}

/// Parses the comma-joined URI SANs of a verified peer certificate (as Envoy's
/// `%DOWNSTREAM_PEER_URI_SAN%` renders them) into an identity in `trust_domain`.
pub fn from_uri_sans<'a>(
    uri_sans: &'a str,
    trust_domain: &str,
) -> Result<Identity<'a>, IdentityError> {
    // SPIFFE IDs cannot contain a comma, so a comma always separates two SANs.
    let commas = uri_sans.bytes().filter(|&b| b == b',').count();
    if commas > 0 {
        return Err(IdentityError::SeveralUriSans(commas + 1));
    }
    parse_spiffe_id(uri_sans, trust_domain)
}

/// Parses exactly `spiffe://<td>/ns/<ns>/sa/<sa>`.
pub fn parse_spiffe_id<'a>(id: &'a str, trust_domain: &str) -> Result<Identity<'a>, IdentityError> {
    use IdentityError::{ForeignTrustDomain, Malformed};
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or(Malformed("scheme is not spiffe://"))?;
    // Split on '/' by bytes (one pass, no searcher per part): at most five parts are kept.
    let mut parts: [Option<&str>; 5] = [None; 5];
    let (mut count, mut start) = (0, 0);
    for (i, b) in rest.bytes().chain(std::iter::once(b'/')).enumerate() {
        if b == b'/' {
            if let Some(slot) = parts.get_mut(count) {
                *slot = rest.get(start..i);
            } else {
                return Err(Malformed("extra path segments after /sa/<service-account>"));
            }
            count += 1;
            start = i + 1;
        }
    }
    let [td, ns_key, namespace, sa_key, service_account] = parts;
    let td = td.unwrap_or_default();
    if ns_key != Some("ns") || sa_key != Some("sa") {
        return Err(Malformed(
            "path is not /ns/<namespace>/sa/<service-account>",
        ));
    }
    let (Some(namespace), Some(service_account)) = (namespace, service_account) else {
        return Err(Malformed(
            "path is not /ns/<namespace>/sa/<service-account>",
        ));
    };
    if !valid_trust_domain(td) {
        return Err(Malformed(
            "trust domain is empty or has characters a trust domain cannot have",
        ));
    }
    if !valid_segment(namespace) || !valid_segment(service_account) {
        return Err(Malformed(
            "namespace or service account is empty or has characters SPIFFE forbids",
        ));
    }
    if td != trust_domain {
        return Err(ForeignTrustDomain(td.to_owned()));
    }
    Ok(Identity {
        principal: id,
        trust_domain: td,
        namespace,
        service_account,
    })
}

/// SPIFFE: trust domains are lower-case letters, digits, `.`, `-`, `_`.
fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty() && td.bytes().all(|b| byte_class(b) & TRUST_DOMAIN != 0)
}

/// SPIFFE: path segments are letters, digits, `.`, `-`, `_`, and never `.` or `..` alone. This
/// also rules out NUL, `%`, `@`, `?`, `#` and every other byte a confused parser could split on.
fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment.bytes().all(|b| byte_class(b) & SEGMENT != 0)
}

const TRUST_DOMAIN: u8 = 1;
const SEGMENT: u8 = 2;

/// What each byte may be part of, looked up once per byte (IDs are checked per request).
// Indexes below 256 in a constant: out of range would fail the build, never a request.
#[allow(clippy::indexing_slicing)]
const BYTE_CLASSES: [u8; 256] = {
    let mut classes = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let common = c.is_ascii_digit() || c == b'.' || c == b'-' || c == b'_';
        if common || c.is_ascii_lowercase() {
            classes[b] |= TRUST_DOMAIN;
        }
        if common || c.is_ascii_alphabetic() {
            classes[b] |= SEGMENT;
        }
        b += 1;
    }
    classes
};

fn byte_class(b: u8) -> u8 {
    BYTE_CLASSES.get(usize::from(b)).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "cluster.local";

    #[test]
    fn istio_spiffe_id_gives_namespace_and_service_account() {
        let id = parse_spiffe_id("spiffe://cluster.local/ns/default/sa/sleep", TD).unwrap();
        assert_eq!(id.namespace, "default");
        assert_eq!(id.service_account, "sleep");
        assert_eq!(id.principal, "spiffe://cluster.local/ns/default/sa/sleep");
        let mut source = crate::request::Source::default();
        source.set_identity(&id);
        assert_eq!(source.user(), Some("cluster.local/ns/default/sa/sleep"));
    }

    #[test]
    fn anything_but_the_exact_form_gives_no_identity() {
        for bad in [
            "spiffe://cluster.local/ns/politics/sa/sleep/extra",
            "spiffe://cluster.local/ns/politics/sa/",
            "spiffe://cluster.local/ns/politics",
            "spiffe://cluster.local/sa/sleep/ns/politics",
            "spiffe://cluster.local//ns/politics/sa/sleep",
            "spiffe://cluster.local/ns/politics\0/sa/sleep",
            "spiffe://cluster.local/ns/politics%2f/sa/sleep",
            "spiffe://cluster.local/ns/../sa/sleep",
            "spiffe://cluster.local/ns/politics/sa/sleep?x",
            "spiffe://Cluster.Local/ns/politics/sa/sleep",
            "spiffe:///ns/politics/sa/sleep",
            "https://cluster.local/ns/politics/sa/sleep",
            "SPIFFE://cluster.local/ns/politics/sa/sleep",
            "",
        ] {
            assert!(
                matches!(parse_spiffe_id(bad, TD), Err(IdentityError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn another_trust_domain_gives_no_identity() {
        assert_eq!(
            parse_spiffe_id("spiffe://evil.local/ns/politics/sa/sleep", TD),
            Err(IdentityError::ForeignTrustDomain("evil.local".into()))
        );
    }

    #[test]
    fn several_uri_sans_give_no_identity() {
        let sans = "spiffe://cluster.local/ns/default/sa/sleep,spiffe://cluster.local/ns/politics/sa/sleep";
        assert_eq!(
            from_uri_sans(sans, TD),
            Err(IdentityError::SeveralUriSans(2))
        );
    }
}
