//! The DNS answer reader (`egress-policy dns-guard`): any bytes a resolver may send. What it reads
//! is read the same with bytes appended, and every address it gives lies inside the message.
#![no_main]

use egress_policy_core::dns::read_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(answer) = read_answer(bytes) {
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0xC0, 0x0C, 0, 1]);
        assert_eq!(read_answer(&longer), Ok(answer.clone()));
        assert!(answer.addresses.len() * 4 <= bytes.len());
        assert!(answer.name.len() <= 255 * 4);
    }
});
