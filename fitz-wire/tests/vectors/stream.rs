//! Placeholder until this domain's codec lands.

use crate::util::*;
use crate::Dir;

pub fn encode(_name: &str, _f: &Fields, _ctx: &Ctx<'_>) -> Option<R<Vec<u8>>> {
    None
}

pub fn decode(_name: &str, _dir: Dir, _p: &[u8], _ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    None
}
