//! Grouping the fragments of encapsulated Pixel Data into frames (PS3.5
//! section A.4).

use bytes::Bytes;

/// Groups `fragments` into `frames` frames.
///
/// The first rule that applies is used. The Basic Offset Table gives the
/// offset of each frame's first fragment item, measured from the first
/// fragment item's tag. Without it, equal counts mean one fragment per frame,
/// and a single frame takes all fragments. Otherwise a new frame starts at
/// each fragment that begins with a JPEG SOI or JPEG 2000 SOC marker.
pub fn frames(offset_table: &[u32], fragments: &[Vec<u8>], frames: usize) -> Result<Vec<Bytes>, String> {
    let groups = if !offset_table.is_empty() {
        groups_from_offsets(offset_table, fragments)?
    } else if fragments.len() == frames {
        (0..frames).map(|index| index..index + 1).collect()
    } else if frames == 1 {
        std::iter::once(0..fragments.len()).collect()
    } else {
        groups_from_markers(fragments)
    };
    if groups.len() != frames {
        return Err(format!(
            "{} fragments cannot be split into {frames} frames ({} found)",
            fragments.len(),
            groups.len()
        ));
    }
    Ok(groups.into_iter().map(|range| Bytes::from(fragments[range].concat())).collect())
}

fn groups_from_offsets(offset_table: &[u32], fragments: &[Vec<u8>]) -> Result<Vec<std::ops::Range<usize>>, String> {
    // Position of each fragment item, counting its 8-byte item header.
    let mut positions = Vec::with_capacity(fragments.len());
    let mut position = 0u64;
    for fragment in fragments {
        positions.push(position);
        position += 8 + fragment.len() as u64;
    }
    let mut starts = Vec::with_capacity(offset_table.len());
    for offset in offset_table {
        let index = positions
            .iter()
            .position(|position| *position == u64::from(*offset))
            .ok_or_else(|| format!("Basic Offset Table entry {offset} is not at a fragment boundary"))?;
        starts.push(index);
    }
    let mut groups = Vec::with_capacity(starts.len());
    for (number, start) in starts.iter().enumerate() {
        let end = starts.get(number + 1).copied().unwrap_or(fragments.len());
        if end <= *start {
            return Err("Basic Offset Table entries are not increasing".into());
        }
        groups.push(*start..end);
    }
    Ok(groups)
}

fn groups_from_markers(fragments: &[Vec<u8>]) -> Vec<std::ops::Range<usize>> {
    let starts_frame = |fragment: &Vec<u8>| fragment.starts_with(&[0xFF, 0xD8]) || fragment.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]);
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for (index, fragment) in fragments.iter().enumerate() {
        match groups.last_mut() {
            Some(group) if !starts_frame(fragment) => group.end = index + 1,
            _ => groups.push(index..index + 1),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::frames;

    #[test]
    fn offset_table_groups_fragments() {
        let fragments = vec![vec![1; 4], vec![2; 6], vec![3; 2]];
        // Frame 1 = fragments 0 and 1, frame 2 = fragment 2 at 8+4+8+6 = 26.
        let split = frames(&[0, 26], &fragments, 2).unwrap();
        assert_eq!(split[0].as_ref(), [vec![1; 4], vec![2; 6]].concat().as_slice());
        assert_eq!(split[1].as_ref(), [3, 3]);
    }

    #[test]
    fn one_fragment_per_frame_without_table() {
        let fragments = vec![vec![1; 2], vec![2; 2]];
        let split = frames(&[], &fragments, 2).unwrap();
        assert_eq!(split.len(), 2);
        assert_eq!(split[1].as_ref(), [2, 2]);
    }

    #[test]
    fn jpeg_markers_start_frames() {
        let fragments = vec![vec![0xFF, 0xD8, 1], vec![5, 6], vec![0xFF, 0xD8, 2]];
        let split = frames(&[], &fragments, 2).unwrap();
        assert_eq!(split[0].as_ref(), [0xFF, 0xD8, 1, 5, 6]);
        assert_eq!(split[1].as_ref(), [0xFF, 0xD8, 2]);
    }

    #[test]
    fn offset_outside_fragments_rejected() {
        let fragments = vec![vec![1; 4], vec![2; 4]];
        assert!(frames(&[0, 7], &fragments, 2).is_err());
    }
}
