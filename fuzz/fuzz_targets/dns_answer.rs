//! The DNS answer reader (`egress-policy dns-guard`): any bytes a resolver may send. What it reads
//! is read the same with bytes appended, every address it gives lies inside the message, and
//! blanking addresses leaves a message read the same but for them.
#![no_main]

use egress_policy_core::dns::{blank_addresses, read_answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(answer) = read_answer(bytes) {
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0xC0, 0x0C, 0, 1]);
        assert_eq!(read_answer(&longer), Ok(answer.clone()));
        assert!(answer.addresses.len() * 4 <= bytes.len());
        assert!(answer.name.len() <= 255 * 4);
        // Blanking keeps the message readable, its length and its question.
        let (blanked, which) = blank_addresses(bytes, |a| a.is_loopback()).unwrap();
        assert_eq!(blanked.len(), bytes.len());
        let after = read_answer(&blanked).unwrap();
        assert_eq!(after.name, answer.name);
        assert!(after.addresses.iter().all(|a| !a.is_loopback()));
        assert_eq!(
            which.len(),
            answer.addresses.iter().filter(|a| a.is_loopback()).count()
        );
    }
});
