//! The caller's TLS ClientHello, read from a connection's first bytes.
//!
//! On both TLS listeners the policy decides on an SNI that Envoy read from a ClientHello it
//! parsed itself (the outer mTLS handshake, or the application's own ClientHello). The bytes the
//! gateway then relays are the application's, so they are checked too before anything is
//! forwarded: they must start with a TLS ClientHello that names the same server and does not hide
//! the name it really wants (Encrypted Client Hello). Otherwise a caller allowed to reach
//! `api.ibm.com` could ask, inside that tunnel, for another name served by the same address —
//! the TLS form of domain fronting.
//!
//! Parsing is strict where a lenient reading could disagree with the destination's: a
//! ClientHello that two servers could read differently (two `server_name` entries, a repeated
//! extension, lengths that do not add up) is malformed, not guessed at.

/// The largest ClientHello handshake message the gateway reads (README: HTTPS egress). Most are
/// under 2 KiB; post-quantum key shares, many session tickets or long ALPN lists make them larger
/// than one 16 KiB record, so the message may span several records. 64 KiB is what Go's TLS
/// server accepts; a larger one is refused (`client_hello_too_large`), never relayed unread.
pub const MAX_CLIENT_HELLO_BYTES: usize = 64 * 1024;

/// How many of a connection's first bytes the gateway reads to find a whole ClientHello: the
/// message and the headers of the records it spans (at most 16 KiB each, plus slack for the
/// 256 bytes a record may exceed it by).
pub const MAX_FIRST_BYTES: usize = MAX_CLIENT_HELLO_BYTES + 1024;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const SERVER_NAME_HOST: u8 = 0;
/// `encrypted_client_hello` (RFC 9258's successor draft, as deployed) and the older
/// `encrypted_server_name`: either means the real server name is not the one in `server_name`.
const EXTENSIONS_HIDING_THE_NAME: [u16; 2] = [0xfe0d, 0xffce];

/// The parts of a ClientHello the policy checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` extension's host name, as sent.
    pub server_name: Option<Vec<u8>>,
    /// The ClientHello carries an extension that hides the real server name (ECH, ESNI).
    pub hides_server_name: bool,
}

/// What a connection's first bytes are, so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A ClientHello, whole.
    Hello(ClientHello),
    /// The start of a ClientHello: more bytes are needed.
    Incomplete,
    /// Not a TLS ClientHello, or one that cannot be read one way only.
    Malformed(&'static str),
    /// A ClientHello larger than [`MAX_CLIENT_HELLO_BYTES`].
    TooLarge,
}

/// Reads the ClientHello at the start of `bytes`; bytes after it are ignored.
pub fn scan(bytes: &[u8]) -> Scan {
    match reassemble(bytes) {
        Ok(Some(message)) => match parse_client_hello(&message) {
            Ok(hello) => Scan::Hello(hello),
            Err(why) => Scan::Malformed(why),
        },
        Ok(None) => Scan::Incomplete,
        Err(unreadable) => unreadable,
    }
}

/// The ClientHello handshake message's body, joined from as many handshake records as it
/// spans; `None` while it is incomplete; what makes it unreadable (`Malformed`, `TooLarge`).
fn reassemble(bytes: &[u8]) -> Result<Option<Vec<u8>>, Scan> {
    let mut handshake = Vec::new();
    let mut rest = bytes;
    loop {
        let Some(&[kind, major, minor, high, low]) = rest.get(..5) else {
            return Ok(None);
        };
        if kind != RECORD_HANDSHAKE {
            return Err(Scan::Malformed(
                "the first bytes are not a TLS handshake record",
            ));
        }
        if major != 3 || minor > 4 {
            return Err(Scan::Malformed("the first record has no TLS version"));
        }
        let length = usize::from(u16::from_be_bytes([high, low]));
        if length == 0 || length > 16 * 1024 + 256 {
            return Err(Scan::Malformed(
                "the first record's length is not a TLS record's",
            ));
        }
        let Some((fragment, after)) = rest.get(5..).and_then(|r| r.split_at_checked(length)) else {
            return Ok(None);
        };
        handshake.extend_from_slice(fragment);
        rest = after;
        let Some(&[message, a, b, c]) = handshake.get(..4) else {
            continue;
        };
        if message != HANDSHAKE_CLIENT_HELLO {
            return Err(Scan::Malformed(
                "the first handshake message is not a ClientHello",
            ));
        }
        let whole = (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c)) + 4;
        if whole > MAX_CLIENT_HELLO_BYTES + 4 {
            return Err(Scan::TooLarge);
        }
        if handshake.len() > whole {
            return Err(Scan::Malformed(
                "the ClientHello's records carry more than the ClientHello",
            ));
        }
        if handshake.len() == whole {
            handshake.drain(..4);
            return Ok(Some(handshake));
        }
    }
}

/// A cursor over a length-prefixed structure: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or("the ClientHello is cut short")?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        match self.take(1)? {
            &[byte] => Ok(byte),
            _ => Err("the ClientHello is cut short"),
        }
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        match self.take(2)? {
            &[high, low] => Ok(u16::from_be_bytes([high, low])),
            _ => Err("the ClientHello is cut short"),
        }
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Result<Reader<'a>, &'static str> {
        let n = usize::from(self.u8()?);
        Ok(Reader(self.take(n)?))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Result<Reader<'a>, &'static str> {
        let n = usize::from(self.u16()?);
        Ok(Reader(self.take(n)?))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_client_hello(body: &[u8]) -> Result<ClientHello, &'static str> {
    let mut r = Reader(body);
    let version = r.u16()?;
    if version >> 8 != 3 {
        return Err("the ClientHello has no TLS version");
    }
    r.take(32)?; // random
    if r.vec8()?.0.len() > 32 {
        return Err("the ClientHello's session id is longer than 32 bytes");
    }
    let suites = r.vec16()?;
    if suites.0.is_empty() || suites.0.len() % 2 != 0 {
        return Err("the ClientHello's cipher suites are malformed");
    }
    if r.vec8()?.is_empty() {
        return Err("the ClientHello has no compression method");
    }
    let mut hello = ClientHello {
        server_name: None,
        hides_server_name: false,
    };
    if r.is_empty() {
        return Ok(hello);
    }
    let mut extensions = r.vec16()?;
    if !r.is_empty() {
        return Err("the ClientHello has bytes after its extensions");
    }
    let mut seen: Vec<u16> = Vec::new();
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if seen.contains(&kind) {
            return Err("the ClientHello repeats an extension");
        }
        seen.push(kind);
        if kind == EXTENSION_SERVER_NAME {
            hello.server_name = Some(server_name(data)?);
        } else if EXTENSIONS_HIDING_THE_NAME.contains(&kind) {
            hello.hides_server_name = true;
        }
    }
    Ok(hello)
}

/// The one host name of a `server_name` extension (RFC 6066 allows one per name type, and
/// host_name is the only type).
fn server_name(mut data: Reader<'_>) -> Result<Vec<u8>, &'static str> {
    let mut list = data.vec16()?;
    if !data.is_empty() {
        return Err("the server_name extension has bytes after its list");
    }
    let mut name = None;
    while !list.is_empty() {
        let kind = list.u8()?;
        let value = list.vec16()?;
        if kind != SERVER_NAME_HOST {
            return Err("the server_name extension has a name that is not a host name");
        }
        if name.is_some() {
            return Err("the server_name extension names more than one host");
        }
        if value.is_empty() {
            return Err("the server_name extension has an empty host name");
        }
        name = Some(value.0.to_vec());
    }
    name.ok_or("the server_name extension is empty")
}

/// An ALPN extension (type 16) of about `bytes` bytes of 200-byte names, as a long ALPN list
/// or post-quantum key shares make a ClientHello larger than one record: for tests.
#[cfg(any(test, not(target_arch = "wasm32")))]
pub fn alpn_padding(bytes: usize) -> (u16, Vec<u8>) {
    let names: Vec<u8> = (0..bytes / 200)
        .flat_map(|_| std::iter::once(199u8).chain([b'x'; 199]))
        .collect();
    let mut data = (names.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&names);
    (16, data)
}

/// Builds ClientHello records for tests (here and in the adapter's): the SNI, extra extensions
/// as (type, data), split into records of at most `record_size` bytes.
#[cfg(any(test, feature = "cases"))]
pub fn client_hello_records(
    sni: Option<&str>,
    extra: &[(u16, Vec<u8>)],
    record_size: usize,
) -> Vec<u8> {
    let mut extensions = Vec::new();
    let mut push_extension = |kind: u16, data: &[u8]| {
        extensions.extend_from_slice(&kind.to_be_bytes());
        extensions.extend_from_slice(&(data.len() as u16).to_be_bytes());
        extensions.extend_from_slice(data);
    };
    if let Some(sni) = sni {
        let mut entry = vec![SERVER_NAME_HOST];
        entry.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        entry.extend_from_slice(sni.as_bytes());
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        push_extension(EXTENSION_SERVER_NAME, &list);
    }
    for (kind, data) in extra {
        push_extension(*kind, data);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut message = vec![HANDSHAKE_CLIENT_HELLO];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut records = Vec::new();
    for chunk in message.chunks(record_size.max(1)) {
        records.extend_from_slice(&[RECORD_HANDSHAKE, 3, 1]);
        records.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        records.extend_from_slice(chunk);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sni: &str) -> ClientHello {
        ClientHello {
            server_name: Some(sni.as_bytes().to_vec()),
            hides_server_name: false,
        }
    }

    #[test]
    fn a_client_hello_gives_its_server_name() {
        let bytes = client_hello_records(Some("api.ibm.com"), &[], 16 * 1024);
        assert_eq!(scan(&bytes), Scan::Hello(hello("api.ibm.com")));
    }

    #[test]
    fn bytes_after_the_client_hello_are_not_read() {
        let mut bytes = client_hello_records(Some("api.ibm.com"), &[], 16 * 1024);
        bytes.extend_from_slice(b"\x14\x03\x03\x00\x01\x01 anything");
        assert_eq!(scan(&bytes), Scan::Hello(hello("api.ibm.com")));
    }

    #[test]
    fn a_client_hello_split_over_records_is_joined() {
        let bytes = client_hello_records(Some("mongo1.composedb.com"), &[], 7);
        assert_eq!(scan(&bytes), Scan::Hello(hello("mongo1.composedb.com")));
    }

    #[test]
    fn a_client_hello_of_up_to_64_kib_over_several_records_is_read_and_a_larger_one_refused() {
        // An ALPN list pads the hello: about 20 KiB (two records), then just over the limit.
        let large = client_hello_records(Some("api.ibm.com"), &[alpn_padding(20_000)], 16 * 1024);
        assert!(large.len() > 16 * 1024 + 5);
        assert_eq!(scan(&large), Scan::Hello(hello("api.ibm.com")));
        let too_large = client_hello_records(
            Some("api.ibm.com"),
            &[alpn_padding(65_400), (21, vec![0; 400])],
            16 * 1024,
        );
        assert!(too_large.len() <= MAX_FIRST_BYTES, "{}", too_large.len());
        assert_eq!(scan(&too_large), Scan::TooLarge);
        // Known as soon as the first record is in: no need to buffer it all.
        assert_eq!(scan(&too_large[..16 * 1024 + 5]), Scan::TooLarge);
    }

    #[test]
    fn every_prefix_of_a_client_hello_is_incomplete() {
        let bytes = client_hello_records(Some("api.ibm.com"), &[], 20);
        for end in 0..bytes.len() {
            assert_eq!(
                scan(&bytes[..end]),
                Scan::Incomplete,
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn a_client_hello_without_server_name_names_none() {
        let bytes = client_hello_records(None, &[], 16 * 1024);
        let expected = ClientHello {
            server_name: None,
            hides_server_name: false,
        };
        assert_eq!(scan(&bytes), Scan::Hello(expected));
    }

    #[test]
    fn encrypted_client_hello_is_noticed() {
        for kind in EXTENSIONS_HIDING_THE_NAME {
            let bytes = client_hello_records(
                Some("public.example.com"),
                &[(kind, vec![0; 40])],
                16 * 1024,
            );
            let Scan::Hello(found) = scan(&bytes) else {
                panic!("not parsed: {kind:#x}");
            };
            assert!(found.hides_server_name, "{kind:#x}");
        }
    }

    #[test]
    fn ambiguous_or_foreign_first_bytes_are_malformed() {
        let two_names = {
            let mut list = Vec::new();
            for name in ["api.ibm.com", "mongo1.composedb.com"] {
                list.push(0u8);
                list.extend_from_slice(&(name.len() as u16).to_be_bytes());
                list.extend_from_slice(name.as_bytes());
            }
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            client_hello_records(None, &[(0, data)], 16 * 1024)
        };
        let repeated = client_hello_records(
            Some("a.example"),
            &[(0, b"\x00\x04\x00\x00\x01b".to_vec())],
            16 * 1024,
        );
        let cases: [(&str, Vec<u8>); 6] = [
            (
                "plain HTTP",
                b"GET / HTTP/1.1\r\nHost: api.ibm.com\r\n\r\n".to_vec(),
            ),
            ("PostgreSQL SSLRequest", vec![0, 0, 0, 8, 4, 210, 22, 47]),
            ("application data", vec![23, 3, 3, 0, 5, 1, 2, 3, 4, 5]),
            ("two host names", two_names),
            ("a repeated extension", repeated),
            ("a ServerHello", {
                let mut b = client_hello_records(Some("a.example"), &[], 16 * 1024);
                b[5] = 2;
                b
            }),
        ];
        for (what, bytes) in cases {
            assert!(
                matches!(scan(&bytes), Scan::Malformed(_)),
                "{what}: {:?}",
                scan(&bytes)
            );
        }
    }

    #[test]
    fn no_input_makes_the_scanner_panic() {
        // A cheap exhaustive-ish sweep: every single-byte corruption of a real hello.
        let bytes = client_hello_records(Some("api.ibm.com"), &[(0x2b, vec![2, 3, 4])], 16 * 1024);
        for i in 0..bytes.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut corrupted = bytes.clone();
                corrupted[i] = value;
                let _ = scan(&corrupted);
            }
        }
    }
}
