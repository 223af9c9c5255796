//! The addresses a DNS answer gives for its question (RFC 1035), for the address guard's record
//! of what a name resolved to (`egress-policy dns-guard`, README: Security). The bytes come from
//! a resolver the gateway does not control: every length and pointer is checked, and a message
//! that is not one well-formed answer is an error, never a panic.

use std::net::IpAddr;

/// The name asked and the addresses answered (A and AAAA records; CNAMEs are followed by the
/// resolver, whose answer carries the final addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The question's name, lower case, without the trailing dot.
    pub name: String,
    /// Every A and AAAA record of the answer section, in order.
    pub addresses: Vec<IpAddr>,
}

/// Why a message is not an answer this reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// Shorter than its header or than what its counts and lengths announce.
    Truncated,
    /// A query, not a response.
    NotResponse,
    /// Not exactly one question.
    QuestionCount,
    /// A name with a label over 63 bytes, over 255 in all, or a compression loop.
    BadName,
}

const HEADER: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// More jumps than a 255-byte name can need is a loop.
const MAX_POINTERS: usize = 128;

/// The question's name and the addresses of `message`, a DNS response.
pub fn read_answer(message: &[u8]) -> Result<Answer, DnsError> {
    let (name, records) = read_records(message)?;
    Ok(Answer {
        name,
        addresses: records.into_iter().map(|(_, address)| address).collect(),
    })
}

/// The question's name, and every A and AAAA record of the answer section: where its address
/// starts in `message`, and the address.
fn read_records(message: &[u8]) -> Result<(String, Vec<(usize, IpAddr)>), DnsError> {
    let flags = *message.get(2).ok_or(DnsError::Truncated)?;
    if message.len() < HEADER {
        return Err(DnsError::Truncated);
    }
    if flags & 0x80 == 0 {
        return Err(DnsError::NotResponse);
    }
    if u16_at(message, 4)? != 1 {
        return Err(DnsError::QuestionCount);
    }
    let answers = u16_at(message, 6)?;
    let (name, mut at) = read_name(message, HEADER)?;
    // The question's type and class.
    at = at
        .checked_add(4)
        .filter(|end| *end <= message.len())
        .ok_or(DnsError::Truncated)?;
    let mut records = Vec::new();
    for _ in 0..answers {
        let (_, after_name) = read_labels(message, at)?;
        let record_type = u16_at(message, after_name)?;
        let class = u16_at(message, after_name + 2)?;
        let length = usize::from(u16_at(message, after_name + 8)?);
        let data_at = after_name + 10;
        let data = message
            .get(data_at..data_at + length)
            .ok_or(DnsError::Truncated)?;
        let address = match (record_type, class) {
            (TYPE_A, CLASS_IN) => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
            (TYPE_AAAA, CLASS_IN) => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
            _ => None,
        };
        records.extend(address.map(|address| (data_at, address)));
        at = data_at + length;
    }
    Ok((name, records))
}

/// The big-endian 16-bit word at `at`.
fn u16_at(message: &[u8], at: usize) -> Result<u16, DnsError> {
    message
        .get(at..at + 2)
        .and_then(|bytes| <[u8; 2]>::try_from(bytes).ok())
        .map(u16::from_be_bytes)
        .ok_or(DnsError::Truncated)
}

/// The name at `at` (following compression pointers), as text, and where the bytes after it
/// start.
fn read_name(message: &[u8], at: usize) -> Result<(String, usize), DnsError> {
    let (labels, after) = read_labels(message, at)?;
    let mut name = String::new();
    for label in labels {
        if !name.is_empty() {
            name.push('.');
        }
        for &byte in label {
            // A label is bytes; what is not printable ASCII is written escaped, so the name
            // logged can never be mistaken for another.
            if byte.is_ascii_graphic() && byte != b'\\' && byte != b'.' {
                name.push(char::from(byte.to_ascii_lowercase()));
            } else {
                name.push_str(&format!("\\{byte:03}"));
            }
        }
    }
    Ok((name, after))
}

/// The labels of the name at `at` (following compression pointers), and where the bytes after
/// it start.
fn read_labels(message: &[u8], mut at: usize) -> Result<(Vec<&[u8]>, usize), DnsError> {
    let mut labels = Vec::new();
    let mut total = 0usize;
    let mut after = None;
    let mut jumps = 0;
    // A pointer leads to a prior occurrence of the name's end (RFC 1035 4.1.4): past the
    // header, and every byte read through it lies before the pointer. So no name reads the
    // header, or a record that comes after it, which another part of the message may rewrite.
    let mut limit: Option<usize> = None;
    let beyond = |position: usize, limit: Option<usize>| limit.is_some_and(|l| position > l);
    loop {
        if beyond(at + 1, limit) {
            return Err(DnsError::BadName);
        }
        let length = *message.get(at).ok_or(DnsError::Truncated)?;
        match length {
            0 => return Ok((labels, after.unwrap_or(at + 1))),
            0xC0..=0xFF => {
                let low = *message.get(at + 1).ok_or(DnsError::Truncated)?;
                after.get_or_insert(at + 2);
                jumps += 1;
                if jumps > MAX_POINTERS {
                    return Err(DnsError::BadName);
                }
                limit = Some(limit.map_or(at, |l| l.min(at)));
                at = usize::from(u16::from_be_bytes([length & 0x3F, low]));
                if at < HEADER {
                    return Err(DnsError::BadName);
                }
            }
            1..=63 => {
                let start = at + 1;
                let end = start + usize::from(length);
                let label = message.get(start..end).ok_or(DnsError::Truncated)?;
                if beyond(end, limit) {
                    return Err(DnsError::BadName);
                }
                total += label.len() + 1;
                if total > 255 {
                    return Err(DnsError::BadName);
                }
                labels.push(label);
                at = start + usize::from(length);
            }
            // 0x40 and 0x80: label types nobody uses.
            _ => return Err(DnsError::BadName),
        }
    }
}

/// `message`, a DNS response, with the address of every A and AAAA record that `drop` holds for
/// overwritten with the unspecified address (`0.0.0.0`, `::`), which every resolver filter of the
/// guard refuses: the gateway's DNS cache then drops it and says so, as for any refused address,
/// and the rest of the message is untouched. Returns the addresses overwritten.
pub fn blank_addresses(
    message: &[u8],
    drop: impl Fn(IpAddr) -> bool,
) -> Result<(Vec<u8>, Vec<IpAddr>), DnsError> {
    let (_, records) = read_records(message)?;
    let mut out = message.to_vec();
    let mut blanked = Vec::new();
    for (data_at, address) in records.into_iter().filter(|(_, a)| drop(*a)) {
        let width = if address.is_ipv4() { 4 } else { 16 };
        if let Some(data) = out.get_mut(data_at..data_at + width) {
            data.fill(0);
            blanked.push(address);
        }
    }
    Ok((out, blanked))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `name` with `records` (type, data), the answers' names compressed to the
    /// question's.
    fn response(name: &str, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut message = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
        message.extend_from_slice(&(records.len() as u16).to_be_bytes());
        message.extend_from_slice(&[0, 0, 0, 0]);
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.extend_from_slice(&[0, 0, 1, 0, 1]);
        for (record_type, data) in records {
            message.extend_from_slice(&[0xC0, 12]);
            message.extend_from_slice(&record_type.to_be_bytes());
            message.extend_from_slice(&[0, 1, 0, 0, 0, 1]);
            message.extend_from_slice(&(data.len() as u16).to_be_bytes());
            message.extend_from_slice(data);
        }
        message
    }

    #[test]
    fn an_answer_gives_its_question_and_every_address() {
        let v6: [u8; 16] = "::ffff:127.0.0.2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let message = response(
            "Internal.IBM.com",
            &[(1, &[127, 0, 0, 2]), (5, b"\x03cdn\x00"), (28, &v6)],
        );
        assert_eq!(
            read_answer(&message),
            Ok(Answer {
                name: "internal.ibm.com".into(),
                addresses: vec![
                    "127.0.0.2".parse().unwrap(),
                    "::ffff:127.0.0.2".parse().unwrap()
                ],
            })
        );
    }

    #[test]
    fn what_is_not_one_whole_answer_is_an_error_at_every_length() {
        let message = response("a.b", &[(1, &[10, 0, 0, 1])]);
        for end in 0..message.len() {
            assert!(read_answer(&message[..end]).is_err(), "{end}");
        }
        let mut query = message.clone();
        query[2] &= 0x7F;
        assert_eq!(read_answer(&query), Err(DnsError::NotResponse));
        let mut looped = message.clone();
        // The question's name points at itself.
        looped.splice(12..17, [0xC0, 12]);
        assert_eq!(read_answer(&looped), Err(DnsError::BadName));
    }

    #[test]
    fn bytes_no_host_name_has_are_written_escaped() {
        let message = response("a\u{0}b.c", &[]);
        assert_eq!(read_answer(&message).unwrap().name, "a\\000b.c");
    }

    #[test]
    fn a_blanked_address_reads_as_unspecified_and_the_rest_is_untouched() {
        let message = response(
            "db.corp.example",
            &[
                (5, b"\x02db\xC0\x0C"),
                (1, &[10, 1, 2, 3]),
                (1, &[203, 0, 113, 7]),
            ],
        );
        let ten = |a: IpAddr| matches!(a, IpAddr::V4(v4) if v4.octets()[0] == 10);
        let (blanked, which) = blank_addresses(&message, ten).unwrap();
        assert_eq!(which, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(blanked.len(), message.len());
        assert_eq!(
            read_answer(&blanked).unwrap().addresses,
            [
                "0.0.0.0".parse::<IpAddr>().unwrap(),
                "203.0.113.7".parse().unwrap()
            ]
        );
        assert_eq!(blank_addresses(&message, |_| false).unwrap().0, message);
    }

    /// Found by the `dns_answer` fuzz target: a question name whose pointer leads into the header
    /// (offset 1) read on, through a label length taken from the header, into the answers'
    /// addresses, so blanking an address changed the name read. Pointers lead back past the
    /// header, and nothing read through one lies after it.
    #[test]
    fn a_name_cannot_read_the_header_or_what_follows_its_pointer() {
        let crash = [
            18, 52, 129, 128, 0, 1, 0, 2, 0, 0, 0, 0, 5, 99, 108, 111, 117, 100, 3, 105, 98, 109,
            3, 99, 111, 12, 192, 1, 109, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 127, 0, 0, 1,
            192, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 127, 0, 0, 1,
        ];
        assert_eq!(read_answer(&crash), Err(DnsError::BadName));
        // A pointer forward, past itself, to a label there.
        let mut message = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(&[0xC0, 14, 1, b'a', 0, 0, 1, 0, 1]);
        assert_eq!(read_answer(&message), Err(DnsError::BadName));
    }
}
