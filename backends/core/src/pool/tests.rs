//! Tests of the buffer pool.

use super::*;

#[test]
fn take_all_then_exhausted_then_give_back() {
    let mut pool = BufferPool::new(1024, 100).unwrap();
    assert_eq!(pool.count(), 100);
    assert_eq!(pool.buf_size(), 1024);
    assert_eq!(pool.available(), 100);
    let mut ids: Vec<BufId> = (0..100).map(|_| pool.take().unwrap()).collect();
    assert_eq!(pool.available(), 0);
    assert_eq!(pool.take(), None);
    assert_eq!(pool.take(), None);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "every buffer handed out exactly once");
    assert!(ids.iter().all(|id| pool.is_taken(*id)));
    for id in &ids {
        pool.give(*id);
    }
    assert_eq!(pool.available(), 100);
    assert!(ids.iter().all(|id| !pool.is_taken(*id)));
    assert!(pool.take().is_some());
}

#[test]
fn lifo_reuse() {
    let mut pool = BufferPool::new(512, 8).unwrap();
    let a = pool.take().unwrap();
    let b = pool.take().unwrap();
    let c = pool.take().unwrap();
    assert_eq!((a, b, c), (BufId(0), BufId(1), BufId(2)));
    pool.give(a);
    pool.give(c);
    assert_eq!(pool.take(), Some(c), "last returned is reused first");
    assert_eq!(pool.take(), Some(a));
    assert_eq!(pool.take(), Some(BufId(3)));
}

#[test]
#[should_panic(expected = "not taken")]
fn double_give_panics() {
    let mut pool = BufferPool::new(512, 4).unwrap();
    let a = pool.take().unwrap();
    pool.give(a);
    pool.give(a);
}

#[test]
#[should_panic(expected = "not taken")]
fn give_never_taken_panics() {
    let mut pool = BufferPool::new(512, 4).unwrap();
    pool.give(BufId(3));
}

#[test]
#[should_panic(expected = "out of range")]
fn give_out_of_range_panics() {
    let mut pool = BufferPool::new(512, 4).unwrap();
    pool.give(BufId(4));
}

fn check_layout(buf_size: usize, count: usize) {
    let pool = BufferPool::new(buf_size, count).unwrap();
    let regions = pool.regions();
    for &(start, len) in &regions {
        assert_eq!(start as usize % PAGE_SIZE, 0, "region start page-aligned");
        assert_eq!(len % PAGE_SIZE, 0, "region length a page multiple");
        assert!(len <= REGION_MAX.max(buf_size.next_multiple_of(PAGE_SIZE)));
    }
    let mut spans: Vec<(usize, usize)> = (0..count)
        .map(|i| {
            let id = BufId(i as u16);
            let p = pool.as_ptr(id) as usize;
            assert_eq!(p % BUF_ALIGN, 0, "buffer {i} aligned");
            if buf_size % PAGE_SIZE == 0 {
                assert_eq!(p % PAGE_SIZE, 0, "page-sized buffer {i} page-aligned");
            }
            // Stable: asking again gives the same pointer.
            assert_eq!(pool.as_ptr(id) as usize, p);
            // Inside the region it claims to be in, entirely.
            let (start, len) = regions[pool.region_index(id)];
            let start = start as usize;
            assert!(
                p >= start && p + buf_size <= start + len,
                "buffer {i} in region"
            );
            (p, p + buf_size)
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "buffers overlap: {:?} {:?}", w[0], w[1]);
    }
    // Regions do not overlap either.
    let mut rs: Vec<(usize, usize)> = regions
        .iter()
        .map(|&(s, l)| (s as usize, s as usize + l))
        .collect();
    rs.sort();
    for w in rs.windows(2) {
        assert!(w[0].1 <= w[1].0, "regions overlap");
    }
    // The regions hold at least the buffers' bytes.
    let total: usize = regions.iter().map(|r| r.1).sum();
    assert!(total >= buf_size * count);
}

#[test]
fn pointers_distinct_aligned_non_overlapping() {
    check_layout(8192, 256);
    check_layout(65536, 256); // 16 MiB over 8 regions
    check_layout(1000, 3000); // odd size, several regions
    check_layout(1, 1);
    check_layout(3 * 1024 * 1024, 3); // larger than a region: one region each
    check_layout(64, MAX_BUFFERS);
}

#[test]
fn regions_split_at_region_max() {
    let pool = BufferPool::new(65536, 256).unwrap();
    let regions = pool.regions();
    assert_eq!(regions.len(), 8);
    assert!(regions.iter().all(|r| r.1 == REGION_MAX));
    let small = BufferPool::new(4096, 4).unwrap();
    assert_eq!(small.regions().len(), 1);
    assert_eq!(small.regions()[0].1, 4 * 4096);
}

#[test]
fn slices_are_disjoint_and_persist() {
    let mut pool = BufferPool::new(100, 10).unwrap();
    for i in 0..10u16 {
        let s = pool.slice_mut(BufId(i));
        assert_eq!(s.len(), 100);
        assert!(s.iter().all(|&b| b == 0), "fresh buffers are zeroed");
        s.fill(i as u8 + 1);
    }
    for i in 0..10u16 {
        let s = pool.slice(BufId(i), 100);
        assert!(s.iter().all(|&b| b == i as u8 + 1), "buffer {i} intact");
    }
    assert_eq!(pool.slice(BufId(0), 0).len(), 0);
}

#[test]
#[should_panic(expected = "slice of 101 bytes")]
fn slice_longer_than_buffer_panics() {
    let pool = BufferPool::new(100, 1).unwrap();
    pool.slice(BufId(0), 101);
}

#[test]
fn invalid_arguments_rejected() {
    let cases = [
        (0, 1),
        (1, 0),
        (1, MAX_BUFFERS + 1),
        (usize::MAX, 1),
        (u32::MAX as usize + 1, 1),
    ];
    for (size, count) in cases {
        let err = BufferPool::new(size, count).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "({size}, {count})");
        assert!(err.to_string().starts_with("buffer pool:"), "{err}");
    }
    #[cfg(target_pointer_width = "32")]
    {
        let err = BufferPool::new(u32::MAX as usize, MAX_BUFFERS).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
    assert!(BufferPool::new(1, MAX_BUFFERS).is_ok());
}

#[test]
fn pool_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<BufferPool>();
    let mut pool = BufferPool::new(64, 2).unwrap();
    let id = pool.take().unwrap();
    let pool = std::thread::spawn(move || {
        pool.give(id);
        pool
    })
    .join()
    .unwrap();
    assert_eq!(pool.available(), 2);
}
