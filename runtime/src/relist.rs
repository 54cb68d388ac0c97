//! A watch's relist (`Init` … `InitApply`* … `InitDone`): what was listed is everything that
//! exists, so whatever a holder knows that the list lacks vanished meanwhile (deleted while the
//! watch was down) and must be removed or ended. One small type, so no watch tracks it by hand.

use std::{collections::HashSet, hash::Hash};

/// The keys listed during the relist under way, if one is.
#[derive(Clone, Debug)]
pub struct Relist<K> {
    listed: Option<HashSet<K>>,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Self { listed: None }
    }
}

impl<K: Eq + Hash + Clone> Relist<K> {
    /// `Init`: a relist starts (one under way is abandoned).
    pub fn start(&mut self) {
        self.listed = Some(HashSet::new());
    }

    /// Whether a relist is under way.
    pub fn is_running(&self) -> bool {
        self.listed.is_some()
    }

    /// `InitApply`: `key` is listed. Outside a relist it means nothing and is ignored.
    pub fn listed(&mut self, key: K) {
        if let Some(listed) = self.listed.as_mut() {
            listed.insert(key);
        }
    }

    /// `InitDone`: the keys of `known` the relist did not list, which vanished. Ends the relist;
    /// without one under way nothing was listed and every known key vanished.
    pub fn finish<'a>(&mut self, known: impl IntoIterator<Item = &'a K>) -> Vec<K>
    where
        K: 'a,
    {
        let listed = self.listed.take().unwrap_or_default();
        known
            .into_iter()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_relist_did_not_list_vanished() {
        let mut relist = Relist::default();
        assert!(!relist.is_running());
        relist.listed("ignored outside a relist");
        relist.start();
        assert!(relist.is_running());
        relist.listed("a");
        relist.listed("c");
        let known = ["a", "b", "c", "d"];
        let mut vanished = relist.finish(known.iter());
        vanished.sort_unstable();
        assert_eq!(vanished, ["b", "d"]);
        assert!(!relist.is_running());
        // A new relist starts empty.
        relist.start();
        relist.start();
        relist.listed("b");
        assert_eq!(relist.finish(["a", "b"].iter()), ["a"]);
    }
}
