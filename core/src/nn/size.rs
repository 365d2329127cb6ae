//! [`Size2`]: a height-and-width argument written as one number or a pair, as PyTorch's
//! `kernel_size=3` or `kernel_size=(3, 2)`.

/// A 2-D size: `3`, `(3, 2)` or `[3, 2]`.
pub trait Size2 {
    /// `[height, width]`.
    fn pair(self) -> [usize; 2];

    /// The argument as Python prints it: `3` for one number, `(3, 2)` for a pair.
    fn py_repr(self) -> String
    where
        Self: Sized,
    {
        py_pair(self.pair())
    }
}

impl Size2 for usize {
    fn pair(self) -> [usize; 2] {
        [self, self]
    }

    fn py_repr(self) -> String {
        self.to_string()
    }
}

impl Size2 for (usize, usize) {
    fn pair(self) -> [usize; 2] {
        [self.0, self.1]
    }
}

impl Size2 for [usize; 2] {
    fn pair(self) -> [usize; 2] {
        self
    }
}

/// A pair as Python prints a tuple: `(3, 3)`.
pub(crate) fn py_pair(p: [usize; 2]) -> String {
    format!("({}, {})", p[0], p[1])
}

/// A tuple of any length as Python prints it: `(3,)`, `(3, 3)`.
pub(crate) fn py_tuple(v: &[usize]) -> String {
    match v {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            v.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
