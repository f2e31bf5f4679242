//! NetFlow v9 (RFC 3954): the packet header, the FlowSet walk (shared with IPFIX, whose sets
//! have the same id/length framing), and template (id 0) and options template (id 1) FlowSets.
//! Data FlowSets (id >= 256) are decoded by the [`crate::decoder`] through the template cache.
//!
//! Every length is checked before use: a set shorter than its own header or longer than the
//! bytes left is an error, a template that declares more fields than its set holds is an error,
//! and each loop consumes at least four bytes per turn, so no input loops forever.

use zerocopy::FromBytes;

use crate::error::DecodeError;
use crate::reader::Reader;
use crate::template::{TemplateDef, TemplateKind};
use crate::wire::v9::{SET_HEADER_LEN, V9_HEADER_LEN, V9Header};

/// FlowSet id of template FlowSets.
pub const TEMPLATE_SET_ID: u16 = 0;
/// FlowSet id of options template FlowSets.
pub const OPTIONS_TEMPLATE_SET_ID: u16 = 1;
/// The lowest data FlowSet (and template) id.
pub const DATA_SET_ID_MIN: u16 = 256;

/// Checks the header; returns it and the bytes after it.
pub fn parse_header(datagram: &[u8]) -> Result<(&V9Header, &[u8]), DecodeError> {
    let (header, rest) = V9Header::ref_from_prefix(datagram)
        .map_err(|_| DecodeError::Truncated { what: "v9 header" })?;
    if header.version.get() != 9 {
        return Err(DecodeError::UnsupportedVersion {
            version: header.version.get(),
        });
    }
    debug_assert_eq!(datagram.len() - rest.len(), V9_HEADER_LEN);
    Ok((header, rest))
}

/// One FlowSet (v9) or Set (IPFIX): its id and its body (without the 4-byte set header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Set<'a> {
    pub id: u16,
    pub body: &'a [u8],
}

/// Walks the sets of a message body. Fewer than 4 bytes left ends the walk (padding); a set
/// length below 4 or past the end is an error, after which the walk stops.
#[derive(Clone, Debug)]
pub struct Sets<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Sets<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Sets {
            r: Reader::new(body),
            failed: false,
        }
    }

    fn next_set(&mut self) -> Result<Set<'a>, DecodeError> {
        let id = self.r.u16("set header")?;
        let len = usize::from(self.r.u16("set header")?);
        if len < SET_HEADER_LEN {
            return Err(DecodeError::BadLength { what: "set length" });
        }
        let body = self.r.take(len - SET_HEADER_LEN, "set")?;
        Ok(Set { id, body })
    }
}

impl<'a> Iterator for Sets<'a> {
    type Item = Result<Set<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.left() < SET_HEADER_LEN {
            return None;
        }
        let s = self.next_set();
        self.failed = s.is_err();
        Some(s)
    }
}

/// One record of a template set.
#[derive(Clone, Copy, Debug)]
pub enum TemplateItem<'a> {
    /// A template to learn.
    Define(TemplateDef<'a>),
    /// IPFIX withdrawal of one template (`id` >= 256) or of all of `kind` (`id` 2 or 3).
    Withdraw { id: u16, kind: TemplateKind },
    /// A template record that is well-formed enough to skip but refused.
    Refused(&'static str),
}

/// Walks the records of a v9 template FlowSet (id 0) or options template FlowSet (id 1).
#[derive(Clone, Debug)]
pub struct V9Templates<'a> {
    r: Reader<'a>,
    kind: TemplateKind,
    failed: bool,
}

impl<'a> V9Templates<'a> {
    pub fn new(body: &'a [u8], kind: TemplateKind) -> Self {
        V9Templates {
            r: Reader::new(body),
            kind,
            failed: false,
        }
    }

    fn data(&mut self) -> Result<Option<TemplateItem<'a>>, DecodeError> {
        let id = self.r.u16("v9 template")?;
        let count = self.r.u16("v9 template")?;
        if id == 0 && count == 0 {
            // Zero padding up to the set's end.
            return Ok(None);
        }
        let raw = self.r.take(usize::from(count) * 4, "v9 template fields")?;
        Ok(Some(def_or_refusal(TemplateDef {
            id,
            kind: TemplateKind::Data,
            scope_count: 0,
            field_count: count,
            ipfix: false,
            raw,
        })))
    }

    fn options(&mut self) -> Result<Option<TemplateItem<'a>>, DecodeError> {
        // Options template: id, option scope length, option length (both in bytes), then
        // the fields and padding to the set's end.
        if self.r.left() < 6 {
            return Ok(None);
        }
        let id = self.r.u16("v9 options template")?;
        let scope_len = usize::from(self.r.u16("v9 options template")?);
        let option_len = usize::from(self.r.u16("v9 options template")?);
        if id == 0 && scope_len == 0 && option_len == 0 {
            return Ok(None);
        }
        if scope_len % 4 != 0 || option_len % 4 != 0 {
            return Err(DecodeError::BadLength {
                what: "v9 options template length",
            });
        }
        let raw = self
            .r
            .take(scope_len + option_len, "v9 options template fields")?;
        let field_count = u16::try_from(raw.len() / 4).map_err(|_| DecodeError::BadLength {
            what: "v9 options template length",
        })?;
        Ok(Some(def_or_refusal(TemplateDef {
            id,
            kind: TemplateKind::Options,
            scope_count: (scope_len / 4) as u16,
            field_count,
            ipfix: false,
            raw,
        })))
    }
}

fn def_or_refusal(def: TemplateDef<'_>) -> TemplateItem<'_> {
    if def.id < DATA_SET_ID_MIN {
        TemplateItem::Refused("template id below 256")
    } else if def.field_count == 0 {
        TemplateItem::Refused("no fields")
    } else {
        TemplateItem::Define(def)
    }
}

impl<'a> Iterator for V9Templates<'a> {
    type Item = Result<TemplateItem<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Fewer than 4 bytes cannot hold a template header: padding.
        if self.failed || self.r.left() < 4 {
            return None;
        }
        let item = match self.kind {
            TemplateKind::Data => self.data(),
            TemplateKind::Options => self.options(),
        };
        match item {
            Ok(Some(i)) => Some(Ok(i)),
            Ok(None) => {
                self.failed = true;
                None
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::FieldSpec;

    #[test]
    fn sets_walk_and_stop_on_bad_lengths() {
        // Set 0 (len 8), set 300 (len 4, empty), 2 bytes of padding.
        let body = [0, 0, 0, 8, 1, 2, 3, 4, 1, 44, 0, 4, 0, 0];
        let sets: Vec<_> = Sets::new(&body).collect();
        assert_eq!(
            sets,
            vec![
                Ok(Set {
                    id: 0,
                    body: &[1, 2, 3, 4]
                }),
                Ok(Set { id: 300, body: &[] }),
            ]
        );
        // Length 3 (< header), then nothing more.
        let bad = [1, 44, 0, 3, 0, 0, 0, 0];
        let sets: Vec<_> = Sets::new(&bad).collect();
        assert_eq!(
            sets,
            vec![Err(DecodeError::BadLength { what: "set length" })]
        );
        // Length past the end.
        let long = [1, 44, 0, 9, 0, 0, 0, 0];
        let sets: Vec<_> = Sets::new(&long).collect();
        assert_eq!(sets, vec![Err(DecodeError::Truncated { what: "set" })]);
    }

    #[test]
    fn template_flowset_with_two_templates_and_padding() {
        let body = [
            1, 0, 0, 2, // template 256, 2 fields
            0, 8, 0, 4, // IPV4_SRC_ADDR / 4
            0, 1, 0, 4, // IN_BYTES / 4
            1, 1, 0, 1, // template 257, 1 field
            0, 12, 0, 4, // IPV4_DST_ADDR / 4
            0, 0, // padding
        ];
        let items: Vec<_> = V9Templates::new(&body, TemplateKind::Data).collect();
        assert_eq!(items.len(), 2);
        let Some(Ok(TemplateItem::Define(d))) = items.first() else {
            panic!("{items:?}");
        };
        assert_eq!((d.id, d.field_count), (256, 2));
        assert_eq!(
            d.fields().collect::<Vec<_>>(),
            vec![
                FieldSpec {
                    id: 8,
                    len: 4,
                    enterprise: 0
                },
                FieldSpec {
                    id: 1,
                    len: 4,
                    enterprise: 0
                }
            ]
        );
    }

    #[test]
    fn field_count_past_the_set_is_an_error() {
        let body = [1, 0, 0xff, 0xff, 0, 8, 0, 4];
        let items: Vec<_> = V9Templates::new(&body, TemplateKind::Data).collect();
        assert!(matches!(
            items.as_slice(),
            [Err(DecodeError::Truncated { .. })]
        ));
    }

    #[test]
    fn options_template_flowset() {
        let body = [
            1, 1, // template 257
            0, 4, // scope length 4
            0, 8, // option length 8
            0, 1, 0, 4, // scope System / 4
            0, 48, 0, 2, // FLOW_SAMPLER_ID / 2
            0, 34, 0, 4, // SAMPLING_INTERVAL / 4
            0, 0, // padding
        ];
        let items: Vec<_> = V9Templates::new(&body, TemplateKind::Options).collect();
        let [Ok(TemplateItem::Define(d))] = items.as_slice() else {
            panic!("{items:?}");
        };
        assert_eq!((d.id, d.scope_count, d.field_count), (257, 1, 3));
        let odd = [1, 1, 0, 3, 0, 8, 0, 0, 0, 0];
        let items: Vec<_> = V9Templates::new(&odd, TemplateKind::Options).collect();
        assert!(matches!(
            items.as_slice(),
            [Err(DecodeError::BadLength { .. })]
        ));
    }
}
