//! Threading: which messages belong to one conversation.
//!
//! Every Message-ID a message has or refers to (In-Reply-To, the last
//! [`MAX_REFERENCES`](super::message::MAX_REFERENCES) References, and Gmail's X-GM-THRID) is a
//! key. Messages sharing a key share a thread, transitively; so a reply that arrives
//! before its parent lands in the parent's thread (the parent's id is already a key of
//! it), and two partial threads merge when the message linking them arrives. The store
//! keeps the key -> thread map (`thread_refs`); this module decides the grouping.

use std::collections::HashMap;

use super::message::ParsedMessage;

/// The thread keys of a message, deduplicated, its own Message-ID first.
pub fn thread_keys(m: &ParsedMessage) -> Vec<String> {
    let mut keys = vec![m.message_id.clone()];
    let mut push = |k: String| {
        if !k.is_empty() && !keys.contains(&k) {
            keys.push(k);
        }
    };
    push(m.in_reply_to.clone());
    for r in &m.references {
        push(r.clone());
    }
    if !m.gm_thrid.is_empty() {
        push(format!("gm:{}", m.gm_thrid));
    }
    keys
}

/// One thread of a batch: the batch messages in it and the stored threads it joins
/// (several when this batch links threads that were apart: they merge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub members: Vec<usize>,
    pub existing: Vec<i64>,
}

/// Groups a batch's messages (given by their keys) with each other and with the stored
/// threads their keys already belong to.
pub fn group(keys: &[Vec<String>], stored: &HashMap<String, i64>) -> Vec<Group> {
    // Union-find over batch messages; a key seen twice joins its messages.
    let mut parent: Vec<usize> = (0..keys.len()).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut owner: HashMap<&str, usize> = HashMap::new();
    // Stored threads join messages too: two batch messages in the same stored thread.
    let mut by_thread: HashMap<i64, usize> = HashMap::new();
    for (i, message_keys) in keys.iter().enumerate() {
        for k in message_keys {
            let join = |j: usize, parent: &mut Vec<usize>| {
                let (a, b) = (find(parent, i), find(parent, j));
                if a != b {
                    parent[a.max(b)] = a.min(b);
                }
            };
            match owner.get(k.as_str()) {
                Some(&j) => join(j, &mut parent),
                None => {
                    owner.insert(k, i);
                }
            }
            if let Some(&t) = stored.get(k) {
                match by_thread.get(&t) {
                    Some(&j) => join(j, &mut parent),
                    None => {
                        by_thread.insert(t, i);
                    }
                }
            }
        }
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<usize, usize> = HashMap::new();
    for (i, message_keys) in keys.iter().enumerate() {
        let root = find(&mut parent, i);
        let g = *index.entry(root).or_insert_with(|| {
            groups.push(Group { members: Vec::new(), existing: Vec::new() });
            groups.len() - 1
        });
        groups[g].members.push(i);
        for k in message_keys {
            if let Some(&t) = stored.get(k)
                && !groups[g].existing.contains(&t)
            {
                groups[g].existing.push(t);
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter().map(|k| k.iter().map(|s| s.to_string()).collect()).collect()
    }

    #[test]
    fn replies_join_parents_in_any_order() {
        // C replies to B which replies to A; they arrive C, A, unrelated X, B.
        let k = keys(&[&["c", "b", "a"], &["a"], &["x"], &["b", "a"]]);
        let groups = group(&k, &HashMap::new());
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].members, vec![0, 1, 3]);
        assert_eq!(groups[1].members, vec![2]);
    }

    #[test]
    fn a_linking_message_merges_stored_threads() {
        let stored =
            HashMap::from([("a".to_string(), 7), ("b".to_string(), 7), ("c".to_string(), 3), ("d".to_string(), 3)]);
        // C (stored as a reference of D) replies to B: threads 7 and 3 must merge.
        let groups = group(&keys(&[&["c", "b", "a"]]), &stored);
        assert_eq!(groups.len(), 1);
        let mut existing = groups[0].existing.clone();
        existing.sort();
        assert_eq!(existing, vec![3, 7]);
    }

    #[test]
    fn keys_include_gmail_thread_and_skip_duplicates() {
        let m = ParsedMessage {
            message_id: "m".into(),
            in_reply_to: "p".into(),
            references: vec!["r".into(), "p".into()],
            gm_thrid: "123".into(),
            ..Default::default()
        };
        assert_eq!(thread_keys(&m), vec!["m", "p", "r", "gm:123"]);
    }
}
