// The real login page loses keystrokes that arrive too soon after typing in
// another field (its masked inputs re-render on focus). Reproduced here: key
// input within a short window (80 ms unless the fault switch says otherwise)
// of the last accepted keystroke in a different field is dropped. Typing with
// a pause between fields avoids it.
(function () {
  'use strict';
  if (document.body.getAttribute('data-fast-typing-drop') !== '1') return;
  var WINDOW_MS = parseInt(document.body.getAttribute('data-fast-typing-window-ms'), 10) || 80;
  var lastField = null;
  var lastAt = 0;
  document.getElementById('frmLogin').addEventListener('keydown', function (e) {
    var field = e.target;
    if (field.tagName !== 'INPUT' || e.key.length !== 1) return;
    var now = performance.now();
    if (lastField && lastField !== field && now - lastAt < WINDOW_MS) {
      e.preventDefault();
      return;
    }
    lastField = field;
    lastAt = now;
  }, true);
})();
