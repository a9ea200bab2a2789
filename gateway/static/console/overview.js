// Batch overview: copy buttons for links, and the label field only where it matters.
import { copyText, flashButton } from './common.js';

for (const button of document.querySelectorAll('button.copy[data-copy]')) {
  button.addEventListener('click', async () => {
    const ok = await copyText(button.dataset.copy);
    flashButton(button, ok ? 'Copied' : 'Copy failed');
    button.closest('tr')?.querySelector('input')?.select();
  });
}

const copyAll = document.querySelector('button.copy-all');
if (copyAll) {
  const urls = [...document.querySelectorAll('button.copy[data-copy]')].map((b) => b.dataset.copy);
  copyAll.disabled = urls.length === 0;
  copyAll.addEventListener('click', async () => {
    const ok = await copyText(urls.join('\n'));
    flashButton(copyAll, ok ? `Copied ${urls.length}` : 'Copy failed');
  });
}

// "Ask for a label" only means something for general links (oTree rooms).
const type = document.getElementById('link-type');
const asks = document.querySelector('input[name="label_required"]');
if (type && asks) {
  const sync = () => {
    const general = type.value.startsWith('general');
    asks.disabled = !general;
    if (!general) asks.checked = false;
  };
  type.addEventListener('change', sync);
  sync();
}

// Closing for good asks first (without scripts the form posts straight away).
const closeForm = document.querySelector('form.close-form[data-confirm]');
if (closeForm) {
  closeForm.addEventListener('submit', (event) => {
    const tidy = (text) => (text || '').replace(/\s+/g, ' ').trim();
    const force = closeForm.querySelector('input[name="force"]')?.checked;
    const message = tidy(closeForm.dataset.confirm) + (force ? `\n\n${tidy(closeForm.dataset.confirmForce)}` : '');
    if (!confirm(message)) event.preventDefault();
  });
}
