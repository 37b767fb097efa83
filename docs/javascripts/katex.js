// Renders the TeX that pymdownx.arithmatex (generic mode) wraps in .arithmatex
// elements, again after every instant-navigation page change (material's
// document$). Only those elements are scanned, so a "$" in prose stays text.
document$.subscribe(({ body }) => {
  for (const element of body.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
    });
  }
});
