// The live alert list: each server-sent update replaces the table's rows (rendered and escaped
// by the server's template), keeping whatever a person was typing into a resolve form.
'use strict';
(() => {
  const rows = document.getElementById('alert-rows');
  const status = document.getElementById('live-status');
  if (!rows || !window.EventSource) return;
  const source = new EventSource(rows.dataset.live);
  source.addEventListener('open', () => { status.textContent = 'Live: changes appear as they happen.'; });
  source.addEventListener('alerts', (event) => {
    const typed = new Map();
    let focused = null;
    for (const input of rows.querySelectorAll('input[name="reason"]')) {
      const id = input.closest('tr').dataset.alert;
      if (input.value) typed.set(id, input.value);
      if (document.activeElement === input) focused = id;
    }
    rows.innerHTML = event.data;
    for (const input of rows.querySelectorAll('input[name="reason"]')) {
      const id = input.closest('tr').dataset.alert;
      if (typed.has(id)) input.value = typed.get(id);
      if (id === focused) input.focus();
    }
    status.textContent = 'Live: updated ' + new Date().toLocaleTimeString() + '.';
  });
  source.addEventListener('error', () => {
    status.textContent = source.readyState === EventSource.CLOSED
      ? 'Live updates stopped: reload the page (you may need to sign in again).'
      : 'Reconnecting…';
  });
})();
