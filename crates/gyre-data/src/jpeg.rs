//! Whether a JPEG file is whole: its marker segments walked from the start-of-image marker to the
//! end-of-image marker (ITU T.81 Annex B).
//!
//! The decoder behind `image` (zune-jpeg) decodes a truncated file without an error, filling the
//! missing part of the picture; PIL refuses it ("image file is truncated"). gyre does what PIL
//! does: a file whose data stops before its EOI marker is a bad sample. The walk reads segment
//! lengths up to each start-of-scan, then the entropy-coded data byte by byte (where `FF 00` is a
//! stuffed byte and `FF D0`–`FF D7` are restart markers) to the next marker, so a progressive
//! file with many scans is walked whole. Bytes after EOI (some cameras append data) are allowed.

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

/// Whether `bytes` start like a JPEG (the SOI marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] == SOI
}

fn standalone(marker: u8) -> bool {
    // RSTn, TEM: no length field.
    (0xD0..=0xD7).contains(&marker) || marker == 0x01
}

/// `Ok` when the JPEG in `bytes` reaches its end-of-image marker; otherwise why not.
pub fn check_complete(bytes: &[u8]) -> Result<(), String> {
    let truncated = |at: usize| {
        Err(format!(
            "truncated JPEG: the data ends at byte {} of {} before the end-of-image marker",
            at,
            bytes.len()
        ))
    };
    if !is_jpeg(bytes) {
        return Err("not a JPEG (no start-of-image marker)".into());
    }
    let mut i = 2;
    loop {
        // A marker: one or more 0xFF fill bytes, then its code.
        if i >= bytes.len() {
            return truncated(bytes.len());
        }
        if bytes[i] != 0xFF {
            // Extraneous bytes before a marker: libjpeg warns and skips them, so does this walk
            // (corrupt data is the decoder's business; a missing end is this check's).
            match bytes[i..].iter().position(|&b| b == 0xFF) {
                Some(k) => i += k,
                None => return truncated(bytes.len()),
            }
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return truncated(bytes.len());
        };
        i += 1;
        match marker {
            EOI => return Ok(()),
            m if standalone(m) => continue,
            _ => {}
        }
        if i + 2 > bytes.len() {
            return truncated(bytes.len());
        }
        let len = u16::from_be_bytes([bytes[i], bytes[i + 1]]) as usize;
        if len < 2 {
            return Err(format!("corrupt JPEG: segment length {len} at byte {i}"));
        }
        if i + len > bytes.len() {
            return truncated(bytes.len());
        }
        i += len;
        if marker == SOS {
            // Entropy-coded data up to the next real marker.
            loop {
                if i + 1 >= bytes.len() {
                    return truncated(bytes.len());
                }
                if bytes[i] == 0xFF {
                    let next = bytes[i + 1];
                    if next == 0x00 || (0xD0..=0xD7).contains(&next) {
                        i += 2;
                        continue;
                    }
                    if next == 0xFF {
                        i += 1;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: image::DynamicImage) -> Vec<u8> {
        let mut v = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
            .unwrap();
        v
    }

    fn noisy(w: u32, h: u32) -> image::DynamicImage {
        let mut s = 7u32;
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |_, _| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            image::Rgb([(s >> 24) as u8, (s >> 16) as u8, (s >> 8) as u8])
        }))
    }

    #[test]
    fn whole_files_pass_and_cut_files_fail_at_every_length() {
        let jpg = encode(noisy(40, 24));
        assert_eq!(check_complete(&jpg), Ok(()));
        // Trailing bytes after EOI are allowed.
        let mut tail = jpg.clone();
        tail.extend_from_slice(b"appended by a camera");
        assert_eq!(check_complete(&tail), Ok(()));
        // Every cut, from a header-only stub to a file missing just its EOI, is caught — and the
        // decoder itself accepts the 70% cut of issue 19, which is why this check exists.
        for keep in 2..jpg.len() {
            let e = check_complete(&jpg[..keep]).unwrap_err();
            assert!(e.starts_with("truncated JPEG"), "cut at {keep}: {e}");
        }
        let cut = &jpg[..jpg.len() * 7 / 10];
        assert!(
            image::load_from_memory(cut).is_ok(),
            "the decoder accepts the cut file"
        );
    }

    #[test]
    fn progressive_and_grey_files_are_walked_whole() {
        // A grey baseline JPEG from the encoder, and a hand-built file with two scans, restart
        // markers, stuffed bytes and fill bytes.
        let grey = encode(image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(
            17,
            9,
            |x, y| image::Luma([(x * 13 + y * 7) as u8]),
        )));
        assert_eq!(check_complete(&grey), Ok(()));
        let seg = |m: u8, body: &[u8]| {
            let mut v = vec![0xFF, m];
            v.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
            v.extend_from_slice(body);
            v
        };
        let mut f = vec![0xFF, SOI];
        f.extend(seg(0xE0, b"JFIF\0"));
        f.extend(seg(0xC2, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]));
        f.extend(seg(SOS, &[1, 1, 0, 0, 63, 0]));
        f.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        f.extend([0xFF, 0xFF]); // fill before the next marker
        f.extend(seg(SOS, &[1, 1, 0, 1, 63, 0]));
        f.extend([0x78, 0xFF, 0x00]);
        f.extend([0xFF, EOI]);
        assert_eq!(check_complete(&f), Ok(()));
        assert!(check_complete(&f[..f.len() - 2]).is_err());
        assert!(check_complete(&f[..f.len() - 9]).is_err());
        assert!(check_complete(b"\xFF\xD8garbage")
            .unwrap_err()
            .starts_with("truncated"));
        // Extraneous bytes between segments are skipped, as libjpeg does.
        let mut junk = f[..2].to_vec();
        junk.extend(b"junk");
        junk.extend(&f[2..]);
        assert_eq!(check_complete(&junk), Ok(()));
    }
}
