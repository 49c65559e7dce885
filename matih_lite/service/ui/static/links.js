// "/": open the workbench page matching an MLflow UI link (#/experiments/2/runs/ID, #/models/NAME/...).
(function () {
  "use strict";
  function seg(s) { return encodeURIComponent(decodeURIComponent(s)); }
  function target(hash) {
    var h = (hash || "").replace(/^#/, "");
    var query = "";
    var q = h.indexOf("?");
    if (q >= 0) { query = h.slice(q + 1); h = h.slice(0, q); }
    var parts = h.split("/").filter(function (p) { return p.length; });
    var m;
    if (!parts.length) return "/ui";
    if (parts[0] === "experiments") {
      if (parts.length === 1) return "/ui";
      if (parts[2] === "runs" && parts[3]) {
        var run = "/ui/runs/" + seg(parts[3]);
        if (parts[4] === "artifacts" && parts.length > 5) {
          return run + "/artifacts?path=" + encodeURIComponent(parts.slice(5).map(decodeURIComponent).join("/"));
        }
        return run;
      }
      return "/ui/experiments/" + seg(parts[1]);
    }
    if (parts[0] === "models") {
      if (parts.length === 1) return "/ui/models";
      if (parts[2] === "versions" && parts[3]) return "/ui/models/" + seg(parts[1]) + "/versions/" + seg(parts[3]);
      return "/ui/models/" + seg(parts[1]);
    }
    if (parts[0] === "compare-runs") {
      m = /(?:^|&)runs=([^&]*)/.exec(query);
      if (m) {
        var ids = [];
        try { ids = JSON.parse(decodeURIComponent(m[1])); } catch (e) { ids = decodeURIComponent(m[1]).split(","); }
        return "/ui/compare?runs=" + ids.map(encodeURIComponent).join(",");
      }
      return "/ui";
    }
    return null;
  }
  var to = target(window.location.hash);
  var status = document.getElementById("link-status");
  if (to === null) {
    if (status) status.textContent = "This link (" + window.location.hash + ") has no page in the workbench.";
    return;
  }
  var fallback = document.getElementById("link-fallback");
  if (fallback) fallback.setAttribute("href", to);
  window.location.replace(to);
})();
