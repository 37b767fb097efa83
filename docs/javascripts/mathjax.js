// MathJax 3, served from the site itself (assets/mathjax/, copied from the
// django-static-mathjax package at build time by scripts/mkdocs_mathjax.py):
// formulas render offline. Only the .arithmatex elements that
// pymdownx.arithmatex (generic mode) writes are typeset, so a "$" in prose
// stays text; they are typeset again after every instant-navigation page change.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

document$.subscribe(() => {
  MathJax.startup.promise.then(() => {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    return MathJax.typesetPromise();
  });
});
