//! Placeholder until this domain lands.

use crate::core::{Close, Core, Handled, Request};
use crate::world::Domain;

#[derive(Debug, Default)]
pub(crate) struct Stream;

impl Domain for Stream {
    fn handle(&mut self, _core: &mut Core, _req: &Request<'_>) -> Handled {
        Err(Close("not implemented yet"))
    }
}
