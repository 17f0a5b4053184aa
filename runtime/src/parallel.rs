//! Running independent kernel operations at the same time: program loads
//! (the verifier runs on the loading thread) and policy table installs (each
//! map-in-map update waits for an RCU grace period before it returns, and
//! waits that overlap share one grace period).

/// `f` applied to every item, on up to `threads` threads; the results in
/// the items' order. A panicking `f` gives `None` for its items.
pub fn map_on_threads<T, R>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<Option<R>>
where
    T: Send,
    R: Send,
{
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.into_iter().map(|item| Some(f(item))).collect();
    }
    let count = items.len();
    // Thread `t` takes items t, t + threads, ...
    let mut shares: Vec<Vec<(usize, T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % threads].push((i, item));
    }
    let f = &f;
    let done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || share.into_iter().map(|(i, item)| (i, f(item))).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).flatten().collect()
    });
    let mut out: Vec<Option<R>> = (0..count).map(|_| None).collect();
    for (i, result) in done {
        out[i] = Some(result);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::map_on_threads;

    #[test]
    fn results_keep_the_items_order_whatever_the_thread_count() {
        let items: Vec<u32> = (0..10).collect();
        for threads in [0, 1, 3, 10, 50] {
            let out = map_on_threads(items.clone(), threads, |i| i * 2);
            assert_eq!(out, items.iter().map(|i| Some(i * 2)).collect::<Vec<_>>(), "{threads} threads");
        }
        assert!(map_on_threads(Vec::<u32>::new(), 4, |i| i).is_empty());
    }

    #[test]
    fn a_panicking_item_gives_none_for_its_thread_only() {
        let out = map_on_threads(vec![1u32, 2, 3, 4], 2, |i| {
            #[allow(clippy::panic)]
            if i == 2 {
                panic!("item 2");
            }
            i
        });
        // Thread 1 had items 2 and 4 and panicked on 2: both are lost.
        assert_eq!(out, vec![Some(1), None, Some(3), None]);
    }
}
