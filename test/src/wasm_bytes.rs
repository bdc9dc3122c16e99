//! Writing WebAssembly binaries by hand: the pieces the test images and the bench's
//! generated modules share.

/// Appends a section: its id, its length, its contents.
pub fn section(module: &mut Vec<u8>, id: u8, contents: &[u8]) {
    module.push(id);
    leb_u32(module, contents.len() as u32);
    module.extend_from_slice(contents);
}

/// Appends a name: its length, its UTF-8 bytes.
pub fn name(out: &mut Vec<u8>, text: &str) {
    leb_u32(out, text.len() as u32);
    out.extend_from_slice(text.as_bytes());
}

pub fn leb_u32(out: &mut Vec<u8>, value: u32) {
    leb_u64(out, value.into());
}

pub fn leb_i32(out: &mut Vec<u8>, value: i32) {
    leb_i64(out, value.into());
}

/// Unsigned LEB128.
pub fn leb_u64(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Signed LEB128.
pub fn leb_i64(out: &mut Vec<u8>, mut value: i64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        let done = (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_as_the_spec_writes_it() {
        let mut out = Vec::new();
        leb_u32(&mut out, 624_485);
        assert_eq!(out, [0xe5, 0x8e, 0x26]);
        out.clear();
        leb_i32(&mut out, -123_456);
        assert_eq!(out, [0xc0, 0xbb, 0x78]);
        out.clear();
        leb_i64(&mut out, 64);
        assert_eq!(out, [0xc0, 0x00]);
    }
}
