//! `DeriveInput` → [`ModuleInput`]: the fields in declaration order, what each one is, and
//! its `#[module(..)]` attributes, with spans kept for error messages.

use crate::attr::{self, ContainerAttrs, FieldAttrs};
use crate::ctxt::Ctxt;
use syn::{Data, DeriveInput, Type};

/// A struct the derive can expand.
pub struct ModuleInput<'a> {
    pub ident: &'a syn::Ident,
    pub generics: &'a syn::Generics,
    pub fields: Vec<Field<'a>>,
    pub attrs: ContainerAttrs,
}

/// One field.
pub struct Field<'a> {
    /// `self.<member>`: a name, or an index for tuple structs.
    pub member: syn::Member,
    /// The key segment: the field name, its index, or the `rename`.
    pub name: String,
    pub ty: &'a Type,
    pub kind: Kind,
    pub attrs: FieldAttrs,
}

/// What a field registers, read from its type's syntax (the macro cannot see types; a
/// field taken for a submodule is checked to implement `Module` by the compiler).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Parameter,
    Buffer,
    Module,
    /// `Option<Parameter | Buffer | M>`: registered when `Some`.
    Optional(Leaf),
    /// A type that can never be a module (`u32`, `String`, …): an error unless skipped.
    Plain,
}

/// The kinds an `Option` can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    Parameter,
    Buffer,
    Module,
}

impl<'a> ModuleInput<'a> {
    /// Reads a struct; enums and unions are refused at their name.
    pub fn from_syn(input: &'a DeriveInput) -> syn::Result<ModuleInput<'a>> {
        let cx = Ctxt::default();
        let attrs = attr::container_attrs(&cx, &input.attrs);
        let fields = match &input.data {
            Data::Struct(data) => data
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| Field::from_syn(&cx, i, f))
                .collect(),
            Data::Enum(_) => {
                cx.error_at(
                    &input.ident,
                    "Module cannot be derived for an enum; use a struct or implement Module by hand",
                );
                Vec::new()
            }
            Data::Union(_) => {
                cx.error_at(
                    &input.ident,
                    "Module cannot be derived for a union; use a struct or implement Module by hand",
                );
                Vec::new()
            }
        };
        cx.check()?;
        Ok(ModuleInput {
            ident: &input.ident,
            generics: &input.generics,
            fields,
            attrs,
        })
    }
}

impl<'a> Field<'a> {
    fn from_syn(cx: &Ctxt, index: usize, field: &'a syn::Field) -> Field<'a> {
        let attrs = attr::field_attrs(cx, &field.attrs);
        let member = match &field.ident {
            Some(ident) => syn::Member::Named(ident.clone()),
            None => syn::Member::Unnamed(syn::Index::from(index)),
        };
        let base = match &field.ident {
            Some(ident) => ident.to_string().trim_start_matches("r#").to_string(),
            None => index.to_string(),
        };
        let name = attrs.rename.as_ref().map_or(base, |(name, _)| name.clone());
        Field {
            member,
            name,
            ty: &field.ty,
            kind: kind_of(&field.ty),
            attrs,
        }
    }
}

/// The kind of a field from the syntax of its type.
pub fn kind_of(ty: &Type) -> Kind {
    if let Some(inner) = generic_arg(ty, "Option") {
        return match leaf_of(inner) {
            Some(leaf) => Kind::Optional(leaf),
            None => Kind::Plain,
        };
    }
    match leaf_of(ty) {
        Some(Leaf::Parameter) => Kind::Parameter,
        Some(Leaf::Buffer) => Kind::Buffer,
        Some(Leaf::Module) => Kind::Module,
        None => Kind::Plain,
    }
}

fn leaf_of(ty: &Type) -> Option<Leaf> {
    match last_ident(ty).as_deref() {
        Some("Parameter") => Some(Leaf::Parameter),
        Some("Buffer") => Some(Leaf::Buffer),
        _ if is_plain(ty) => None,
        _ => Some(Leaf::Module),
    }
}

/// Types that can never implement `Module`: numbers, text, references, pointers, tuples,
/// functions, and the standard containers other than `Vec`, `Box` and arrays.
fn is_plain(ty: &Type) -> bool {
    const PLAIN: &[&str] = &[
        "bool",
        "char",
        "str",
        "String",
        "u8",
        "u16",
        "u32",
        "u64",
        "u128",
        "usize",
        "i8",
        "i16",
        "i32",
        "i64",
        "i128",
        "isize",
        "f32",
        "f64",
        "Tensor",
        "HashMap",
        "BTreeMap",
        "HashSet",
        "PhantomData",
        "Cell",
        "RefCell",
        "Mutex",
        "RwLock",
        "Rc",
        "Arc",
        "DType",
    ];
    match ty {
        // A list or box of plain values (`Vec<Tensor>`) is as plain as what it holds.
        Type::Path(_) if let Some(inner) = generic_arg(ty, "Vec").or(generic_arg(ty, "Box")) => {
            is_plain(inner)
        }
        Type::Path(p) if p.qself.is_none() => {
            last_ident(ty).is_some_and(|name| PLAIN.contains(&name.as_str()))
        }
        Type::Array(a) => is_plain(&a.elem),
        Type::Group(g) => is_plain(&g.elem),
        Type::Paren(p) => is_plain(&p.elem),
        Type::Reference(_)
        | Type::Ptr(_)
        | Type::Tuple(_)
        | Type::BareFn(_)
        | Type::Slice(_)
        | Type::Never(_) => true,
        _ => false,
    }
}

fn last_ident(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.to_string()),
        Type::Group(g) => last_ident(&g.elem),
        Type::Paren(p) => last_ident(&p.elem),
        _ => None,
    }
}

/// `T` when `ty` is `wrapper<T>` (by its last path segment).
fn generic_arg<'t>(ty: &'t Type, wrapper: &str) -> Option<&'t Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != wrapper {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        syn::GenericArgument::Type(t) if args.args.len() == 1 => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_types_map_to_their_kinds() {
        let cases = [
            ("Parameter", Kind::Parameter),
            ("torchlet::nn::Parameter", Kind::Parameter),
            ("Buffer", Kind::Buffer),
            ("Linear", Kind::Module),
            ("Vec<Linear>", Kind::Module),
            ("[Conv2d; 3]", Kind::Module),
            ("M", Kind::Module),
            ("Sequential<(Linear, ReLU)>", Kind::Module),
            ("Option<Parameter>", Kind::Optional(Leaf::Parameter)),
            ("Option<Buffer>", Kind::Optional(Leaf::Buffer)),
            ("Option<Linear>", Kind::Optional(Leaf::Module)),
            ("Option<usize>", Kind::Plain),
            ("usize", Kind::Plain),
            ("f64", Kind::Plain),
            ("String", Kind::Plain),
            ("Tensor", Kind::Plain),
            ("(Linear, Linear)", Kind::Plain),
            ("&'a Linear", Kind::Plain),
            ("[f32; 4]", Kind::Plain),
            ("Vec<Tensor>", Kind::Plain),
            ("Box<[Tensor; 2]>", Kind::Plain),
            ("Vec<usize>", Kind::Plain),
            ("Vec<Parameter>", Kind::Module),
            ("Vec<Buffer>", Kind::Module),
            ("Box<dyn Layer>", Kind::Module),
        ];
        for (src, want) in cases {
            let ty: Type = syn::parse_str(src).unwrap();
            assert_eq!(kind_of(&ty), want, "{src}");
        }
    }

    #[test]
    fn names_come_from_fields_indices_and_rename() {
        let input: DeriveInput = syn::parse_str(
            "struct S { l1: Linear, #[module(rename = \"head\")] l2: Linear, r#type: Linear }",
        )
        .unwrap();
        let parsed = ModuleInput::from_syn(&input).unwrap();
        let names: Vec<_> = parsed.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["l1", "head", "type"]);
        let tuple: DeriveInput = syn::parse_str("struct T(Linear, Parameter);").unwrap();
        let parsed = ModuleInput::from_syn(&tuple).unwrap();
        let names: Vec<_> = parsed.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["0", "1"]);
    }

    #[test]
    fn enums_unions_and_unknown_attributes_are_refused() {
        for src in [
            "enum E { A }",
            "union U { a: u32 }",
            "struct S { #[module(frozen)] l: Linear }",
            "struct S { #[module(rename)] l: Linear }",
            "struct S { #[module(rename = 3)] l: Linear }",
            "#[module(skip)] struct S { l: Linear }",
        ] {
            let input: DeriveInput = syn::parse_str(src).unwrap();
            assert!(ModuleInput::from_syn(&input).is_err(), "{src}");
        }
    }
}
