// provision's dashboard: live tiles through Server-Sent Events. The page reads without this script (its
// <noscript> refresh reloads it); with it, each tile the server sends replaces the one shown, or is added.
// A tile's HTML comes rendered and escaped by the server (jinja2 autoescape); nothing here builds markup.
(function () {
  "use strict";
  var rack = document.getElementById("rack");
  if (!rack || !window.EventSource) {
    return;
  }

  function recount() {
    var counts = {};
    rack.querySelectorAll(".tile").forEach(function (tile) {
      var stage = tile.getAttribute("data-stage");
      counts[stage] = (counts[stage] || 0) + 1;
    });
    document.querySelectorAll("[data-count-stage]").forEach(function (item) {
      var count = counts[item.getAttribute("data-count-stage")] || 0;
      item.querySelector(".count").textContent = String(count);
      item.hidden = count === 0;
    });
    var empty = document.getElementById("empty");
    if (empty) {
      empty.hidden = rack.children.length > 0;
    }
    var session = document.getElementById("session");
    if (session) {  // French says "0 machine", "1 machine", "2 machines"; English "1 machine", "0 machines"
      var n = rack.querySelectorAll(".tile").length;
      var one = session.getAttribute("data-plural") === "fr" ? n <= 1 : n === 1;
      session.textContent = session.getAttribute(one ? "data-one" : "data-many").replace("{n}", String(n));
    }
  }

  function place(tile, number) {
    var tiles = rack.querySelectorAll(".tile");
    for (var i = 0; i < tiles.length; i += 1) {
      if (Number(tiles[i].getAttribute("data-number")) > number) {
        rack.insertBefore(tile, tiles[i]);
        return;
      }
    }
    rack.appendChild(tile);
  }

  var source = new EventSource(rack.getAttribute("data-events"));
  source.addEventListener("tile", function (event) {
    var data = JSON.parse(event.data);
    var holder = document.createElement("ol");
    holder.innerHTML = data.html;
    var tile = holder.querySelector(".tile");
    if (!tile) {
      return;
    }
    var old = document.getElementById(tile.id);
    if (old && Number(old.getAttribute("data-number")) === data.number) {
      old.replaceWith(tile);
    } else {
      if (old) {
        old.remove();
      }
      place(tile, data.number);
    }
    recount();
  });
  document.documentElement.setAttribute("data-live", "on");
}());
