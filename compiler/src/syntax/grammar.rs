//! The parser generated from the grammar in `lang-spec/polc.pest`.

use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "../../lang-spec/polc.pest"]
pub struct PolGrammar;
