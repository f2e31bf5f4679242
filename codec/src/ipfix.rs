//! IPFIX (RFC 7011): the message header (its length field checked against the datagram),
//! template sets (id 2) and options template sets (id 3) with enterprise-specific field
//! specifiers, and template withdrawals (field count 0: one template; template id 2 or 3 with
//! field count 0: all data or all options templates of the domain). Sets use the same framing
//! as v9 FlowSets ([`crate::v9::Sets`]); data sets (id >= 256) are decoded by the
//! [`crate::decoder`].

use zerocopy::FromBytes;

use crate::error::DecodeError;
use crate::reader::Reader;
use crate::template::{TemplateDef, TemplateKind};
use crate::v9::TemplateItem;
use crate::wire::ipfix::{IPFIX_HEADER_LEN, IpfixHeader};

pub const TEMPLATE_SET_ID: u16 = 2;
pub const OPTIONS_TEMPLATE_SET_ID: u16 = 3;
pub const DATA_SET_ID_MIN: u16 = 256;

/// Checks the header and its length field; returns it and the message body (bytes after the
/// message's length are ignored).
pub fn parse_header(datagram: &[u8]) -> Result<(&IpfixHeader, &[u8]), DecodeError> {
    let (header, _) =
        IpfixHeader::ref_from_prefix(datagram).map_err(|_| DecodeError::Truncated {
            what: "ipfix header",
        })?;
    if header.version.get() != 10 {
        return Err(DecodeError::UnsupportedVersion {
            version: header.version.get(),
        });
    }
    let len = usize::from(header.length.get());
    if len < IPFIX_HEADER_LEN {
        return Err(DecodeError::BadLength {
            what: "ipfix message length",
        });
    }
    let body = datagram
        .get(IPFIX_HEADER_LEN..len)
        .ok_or(DecodeError::Truncated {
            what: "ipfix message",
        })?;
    Ok((header, body))
}

/// Walks the records of an IPFIX template set (2) or options template set (3).
#[derive(Clone, Debug)]
pub struct IpfixTemplates<'a> {
    r: Reader<'a>,
    kind: TemplateKind,
    failed: bool,
}

impl<'a> IpfixTemplates<'a> {
    pub fn new(body: &'a [u8], kind: TemplateKind) -> Self {
        IpfixTemplates {
            r: Reader::new(body),
            kind,
            failed: false,
        }
    }

    fn record(&mut self) -> Result<Option<TemplateItem<'a>>, DecodeError> {
        let id = self.r.u16("ipfix template")?;
        let count = self.r.u16("ipfix template")?;
        if count == 0 {
            // Withdrawal. Template id 0 with count 0 is zero padding.
            return Ok(match id {
                0 => None,
                _ => Some(TemplateItem::Withdraw {
                    id,
                    kind: self.kind,
                }),
            });
        }
        let scope_count = match self.kind {
            TemplateKind::Data => 0,
            TemplateKind::Options => self.r.u16("ipfix options template")?,
        };
        // Size the field specifiers: 4 bytes each, 8 with the enterprise bit.
        let start = self.r.rest();
        let mut len = 0usize;
        for _ in 0..count {
            let [hi, _, _, _] = self.r.take_array::<4>("ipfix template fields")?;
            len += 4;
            if hi & 0x80 != 0 {
                self.r.skip(4, "ipfix enterprise number")?;
                len += 4;
            }
        }
        let raw = start.get(..len).ok_or(DecodeError::Truncated {
            what: "ipfix template fields",
        })?;
        let def = TemplateDef {
            id,
            kind: self.kind,
            scope_count,
            field_count: count,
            ipfix: true,
            raw,
        };
        Ok(Some(if id < DATA_SET_ID_MIN {
            TemplateItem::Refused("template id below 256")
        } else if self.kind == TemplateKind::Options && (scope_count == 0 || scope_count > count) {
            TemplateItem::Refused("options scope count")
        } else {
            TemplateItem::Define(def)
        }))
    }
}

impl<'a> Iterator for IpfixTemplates<'a> {
    type Item = Result<TemplateItem<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.left() < 4 {
            return None;
        }
        match self.record() {
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

/// Reads one variable-length field's length prefix (RFC 7011 section 7): one byte, or 255
/// followed by a 2-byte length.
pub fn var_len(r: &mut Reader<'_>) -> Result<usize, DecodeError> {
    match r.u8("variable length")? {
        255 => r.u16("variable length").map(usize::from),
        n => Ok(usize::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::FieldSpec;

    #[test]
    fn header_length_is_checked() {
        let mut m = [0u8; 20];
        m[1] = 10;
        m[3] = 20;
        assert_eq!(parse_header(&m).map(|(_, b)| b.len()), Ok(4));
        m[3] = 21;
        assert!(matches!(
            parse_header(&m),
            Err(DecodeError::Truncated { .. })
        ));
        m[3] = 15;
        assert!(matches!(
            parse_header(&m),
            Err(DecodeError::BadLength { .. })
        ));
        m[1] = 9;
        assert_eq!(
            parse_header(&m).err(),
            Some(DecodeError::UnsupportedVersion { version: 9 })
        );
    }

    #[test]
    fn enterprise_fields_take_eight_bytes() {
        let body = [
            1, 0, 0, 3, // template 256, 3 fields
            0, 8, 0, 4, // sourceIPv4Address / 4
            0x80, 1, 0, 8, 0, 0, 0x72, 0x79, // reverse octetDeltaCount (PEN 29305) / 8
            0, 12, 0, 4, // destinationIPv4Address / 4
        ];
        let items: Vec<_> = IpfixTemplates::new(&body, TemplateKind::Data).collect();
        let [Ok(TemplateItem::Define(d))] = items.as_slice() else {
            panic!("{items:?}");
        };
        let f: Vec<FieldSpec> = d.fields().collect();
        assert_eq!(f.len(), 3);
        assert_eq!(
            f[1],
            FieldSpec {
                id: 1,
                len: 8,
                enterprise: 29305
            }
        );
        assert_eq!(f[2].id, 12);
    }

    #[test]
    fn withdrawals_one_and_all() {
        let body = [1, 0, 0, 0, 0, 2, 0, 0];
        let items: Vec<_> = IpfixTemplates::new(&body, TemplateKind::Data).collect();
        assert!(matches!(
            items.as_slice(),
            [
                Ok(TemplateItem::Withdraw { id: 256, .. }),
                Ok(TemplateItem::Withdraw { id: 2, .. })
            ]
        ));
    }

    #[test]
    fn options_scope_count_is_checked() {
        // Template 300, 2 fields, scope count 3 (> fields).
        let body = [1, 44, 0, 2, 0, 3, 1, 46, 0, 4, 0, 34, 0, 4];
        let items: Vec<_> = IpfixTemplates::new(&body, TemplateKind::Options).collect();
        assert!(matches!(
            items.as_slice(),
            [Ok(TemplateItem::Refused("options scope count"))]
        ));
    }

    #[test]
    fn var_len_forms() {
        let mut r = Reader::new(&[5, 255, 1, 0, 255]);
        assert_eq!(var_len(&mut r), Ok(5));
        assert_eq!(var_len(&mut r), Ok(256));
        assert!(var_len(&mut r).is_err());
    }
}
