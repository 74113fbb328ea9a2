//! An RFC 6962 (RFC 9162 §2.1) Merkle tree over chain heads, with inclusion
//! proofs and their verification.
//!
//! - A leaf is one chain head `(chain, chain_seq, hash)`; its canonical bytes
//!   are the canonical JSON `{"chain":…,"hash":…,"seq":…}` (keys sorted, no
//!   whitespace; see [`crate::domain::event::canonical_json`]).
//! - leaf hash = SHA-256(0x00 ‖ canonical leaf); node hash = SHA-256(0x01 ‖ left ‖ right).
//! - A tree of `n` leaves splits at `k`, the largest power of two below `n`.
//! - The leaves of a checkpoint are sorted by chain (byte order), one per chain.
//!
//! The module is pure (no I/O) so that a certificate can be verified offline
//! with nothing but this code, and so that anyone can reimplement it from the
//! description above. Hashes are hex strings (lower case) in every document.
//! The code is small enough (and the crates that offer it, `rs_merkle` and
//! `ct-merkle`, fix a leaf encoding or a tree shape we would still have to
//! wrap), so it is written here against the RFC and property-tested.

use crate::domain::event::canonical_json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// One leaf: the head of one chain at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Leaf {
    /// The chain (`request:<uuid>`, `hold:<id>`, `processor:<name>`, `system`, `legacy`).
    pub chain: String,
    /// The head's position in its chain (from 1).
    pub chain_seq: i64,
    /// The head event's hash (hex).
    pub hash: String,
}

impl Leaf {
    /// The canonical bytes that are hashed: `{"chain":…,"hash":…,"seq":…}`.
    pub fn canonical(&self) -> String {
        let doc = serde_json::json!({
            "chain": self.chain,
            "seq": self.chain_seq,
            "hash": self.hash,
        });
        let mut out = String::new();
        canonical_json(&doc, &mut out);
        out
    }

    /// SHA-256(0x00 ‖ canonical leaf).
    pub fn leaf_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(self.canonical().as_bytes());
        h.finalize().into()
    }
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The root over leaf hashes (RFC 6962 MTH). The empty tree's root is SHA-256("").
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The inclusion proof (RFC 6962 PATH) of leaf `index` among `leaves`,
/// bottom-up. `None` if the index is out of range.
pub fn proof_of(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let mut lo = 0;
    let mut hi = leaves.len();
    let mut m = index;
    // Walk down, remembering the sibling subtrees; then reverse (bottom-up).
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            path.push(root_of(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(root_of(&leaves[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// Check that `leaf` is leaf `index` of a tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// A tree over sorted leaves.
#[derive(Debug, Clone)]
pub struct Tree {
    leaves: Vec<Leaf>,
    hashes: Vec<Hash>,
}

impl Tree {
    /// Build over `leaves`, sorted by chain (then seq) first.
    pub fn new(mut leaves: Vec<Leaf>) -> Tree {
        leaves.sort();
        let hashes = leaves.iter().map(Leaf::leaf_hash).collect();
        Tree { leaves, hashes }
    }
    /// The leaves, in tree order.
    pub fn leaves(&self) -> &[Leaf] {
        &self.leaves
    }
    /// The root.
    pub fn root(&self) -> Hash {
        root_of(&self.hashes)
    }
    /// The proof for `chain`'s leaf, if the tree holds one.
    pub fn prove(&self, chain: &str) -> Option<Proof> {
        let index = self.leaves.iter().position(|l| l.chain == chain)?;
        let path = proof_of(&self.hashes, index)?;
        Some(Proof {
            leaf: self.leaves[index].clone(),
            index: index as u64,
            size: self.leaves.len() as u64,
            path: path.iter().map(hex::encode).collect(),
        })
    }
}

/// An inclusion proof as certificates carry it (hashes in hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The proven leaf.
    pub leaf: Leaf,
    /// Its index among the checkpoint's sorted leaves.
    pub index: u64,
    /// How many leaves the checkpoint covers.
    pub size: u64,
    /// Sibling hashes, bottom-up (hex).
    pub path: Vec<String>,
}

impl Proof {
    /// Whether the proof leads from its leaf to `root` (hex).
    pub fn verifies(&self, root_hex: &str) -> bool {
        let Some(root) = parse_hash(root_hex) else {
            return false;
        };
        let Some(path) = self
            .path
            .iter()
            .map(|p| parse_hash(p))
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        verify_inclusion(&self.leaf.leaf_hash(), self.index, self.size, &path, &root)
    }
}

/// Parse a 64-character hex SHA-256.
pub fn parse_hash(s: &str) -> Option<Hash> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(i: usize) -> Leaf {
        Leaf {
            chain: format!("request:{i:04}"),
            chain_seq: i as i64 + 1,
            hash: hex::encode(Sha256::digest(i.to_le_bytes())),
        }
    }

    #[test]
    fn a_single_leaf_is_its_own_root_and_has_an_empty_proof() {
        let t = Tree::new(vec![leaf(1)]);
        assert_eq!(t.root(), leaf(1).leaf_hash());
        let p = t.prove("request:0001").unwrap();
        assert!(p.path.is_empty());
        assert!(p.verifies(&hex::encode(t.root())));
    }

    #[test]
    fn three_leaves_split_two_and_one_as_rfc_6962_says() {
        let h: Vec<Hash> = (0..3).map(|i| leaf(i).leaf_hash()).collect();
        let expect = node_hash(&node_hash(&h[0], &h[1]), &h[2]);
        assert_eq!(root_of(&h), expect);
        assert_eq!(proof_of(&h, 2).unwrap(), vec![node_hash(&h[0], &h[1])]);
        assert_eq!(proof_of(&h, 0).unwrap(), vec![h[1], h[2]]);
    }

    #[test]
    fn leaf_and_node_hashes_are_domain_separated() {
        let l = leaf(0);
        let mut h = Sha256::new();
        h.update(l.canonical().as_bytes());
        let plain: Hash = h.finalize().into();
        assert_ne!(plain, l.leaf_hash());
        assert_eq!(
            l.canonical(),
            format!(r#"{{"chain":"request:0000","hash":"{}","seq":1}}"#, l.hash)
        );
    }

    proptest! {
        #[test]
        fn every_leaf_of_a_random_tree_proves_and_a_flipped_bit_fails(
            n in 1usize..70, flip in any::<(usize, u8)>()
        ) {
            let t = Tree::new((0..n).map(leaf).collect());
            let root = hex::encode(t.root());
            for i in 0..n {
                let p = t.prove(&leaf(i).chain).unwrap();
                prop_assert!(p.verifies(&root), "leaf {} of {}", i, n);
                // Another leaf's content, index or size fails.
                let mut bad = p.clone();
                bad.leaf.chain_seq += 1;
                prop_assert!(!bad.verifies(&root));
                if n > 1 {
                    let mut bad = p.clone();
                    bad.index = ((i + 1) % n) as u64;
                    prop_assert!(!bad.verifies(&root));
                }
                let mut bad = p.clone();
                bad.size += 1;
                // A larger size can only verify if the shape happens to match; RFC 9162
                // binds index+size, so the path length differs and must fail when the
                // rightmost path changes. Only assert it for the last leaf.
                if i == n - 1 && n.is_power_of_two() {
                    prop_assert!(!bad.verifies(&root));
                }
                // A flipped bit anywhere in the path fails.
                if !p.path.is_empty() {
                    let mut bad = p.clone();
                    let j = flip.0 % bad.path.len();
                    let mut h = parse_hash(&bad.path[j]).unwrap();
                    h[(flip.1 as usize) % 32] ^= 1 << (flip.1 % 8);
                    bad.path[j] = hex::encode(h);
                    prop_assert!(!bad.verifies(&root));
                }
            }
            // A flipped bit in the root fails.
            let mut r = t.root();
            r[(flip.1 as usize) % 32] ^= 1 << (flip.1 % 8);
            let p = t.prove(&leaf(0).chain).unwrap();
            prop_assert!(!p.verifies(&hex::encode(r)));
        }

        #[test]
        fn proofs_match_the_recursive_definition(n in 1usize..40) {
            let h: Vec<Hash> = (0..n).map(|i| leaf(i).leaf_hash()).collect();
            for i in 0..n {
                let p = proof_of(&h, i).unwrap();
                prop_assert!(verify_inclusion(&h[i], i as u64, n as u64, &p, &root_of(&h)));
            }
            prop_assert!(proof_of(&h, n).is_none());
        }
    }
}
