// rewardlab review: keyboard review of flag cards; every verdict is saved at once (POST /api/reviews).
// No framework, no build step. Text from the data is only ever set with textContent.
"use strict";

(() => {
  const REVIEWER_KEY = "rewardlab.reviewer";
  const VERDICTS = { "1": "tp", "2": "fp", "3": "needs_review" };
  const LABELS = { tp: "True positive", fp: "False positive", needs_review: "Needs review" };

  document.documentElement.classList.add("js");
  const reviewerInput = document.getElementById("reviewer");
  const stored = window.localStorage.getItem(REVIEWER_KEY);
  if (reviewerInput && stored) reviewerInput.value = stored;
  const reviewer = () => (reviewerInput ? reviewerInput.value.trim() : "");

  // filter forms submit as soon as a choice changes (the button stays for keyboard users)
  for (const select of document.querySelectorAll("form.filters select")) {
    select.addEventListener("change", () => select.form.submit());
  }

  const queue = document.getElementById("queue");
  if (!queue) return;
  const cards = Array.from(queue.querySelectorAll("article.card"));
  const bar = document.getElementById("bar");
  let current = -1;
  let pending = 0;
  let saved = 0;
  let failed = 0;

  function showBar() {
    const parts = [`${saved} saved this session`];
    if (pending) parts.push(`${pending} saving…`);
    if (failed) parts.push(`${failed} not saved: see the red cards`);
    bar.textContent = parts.join(" · ");
    document.body.dataset.pending = String(pending);
  }

  function select(index, scroll = true) {
    if (!cards.length) return;
    index = Math.max(0, Math.min(cards.length - 1, index));
    if (current >= 0) cards[current].classList.remove("current");
    current = index;
    const card = cards[current];
    card.classList.add("current");
    if (scroll) card.scrollIntoView({ block: "start", behavior: "instant" });
  }

  function myVerdict(card) {
    const mine = card.querySelector(`li[data-reviewer="${CSS.escape(reviewer())}"]`);
    return mine ? mine.dataset.verdict : null;
  }

  function markCard(card) {
    const verdict = myVerdict(card);
    for (const button of card.querySelectorAll("button.verdict")) {
      button.classList.toggle("chosen", button.dataset.verdict === verdict);
      button.setAttribute("aria-pressed", String(button.dataset.verdict === verdict));
    }
    card.dataset.verdict = verdict || "";
    const note = card.querySelector("textarea.note");
    const mine = card.querySelector(`li[data-reviewer="${CSS.escape(reviewer())}"]`);
    if (mine && !note.value) note.value = mine.dataset.note || "";
  }

  function showReview(card, row) {
    const list = card.querySelector("ul.reviews");
    let item = list.querySelector(`li[data-reviewer="${CSS.escape(row.reviewer)}"]`);
    if (!item) {
      item = document.createElement("li");
      list.appendChild(item);
    }
    item.dataset.reviewer = row.reviewer;
    item.dataset.verdict = row.verdict;
    item.dataset.note = row.note;
    item.textContent = `${row.reviewer}: ${LABELS[row.verdict]}${row.note ? " — " + row.note : ""}`;
    markCard(card);
  }

  function status(card, text, bad = false) {
    const el = card.querySelector(".status");
    el.textContent = text;
    card.classList.toggle("failed", bad);
  }

  async function save(card, verdict) {
    const body = {
      dataset: queue.dataset.dataset,
      example_id: Number(card.dataset.exampleId),
      detector: card.dataset.detector,
      verdict,
      note: card.querySelector("textarea.note").value,
      reviewer: reviewer(),
    };
    if (!body.reviewer) {
      status(card, "not saved: type your name in the reviewer box first", true);
      return;
    }
    window.localStorage.setItem(REVIEWER_KEY, body.reviewer);
    card.classList.add("saving");
    status(card, "saving…");
    pending += 1;
    showBar();
    try {
      const response = await fetch("/api/reviews", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const payload = await response.json().catch(() => ({ error: response.statusText }));
      if (!response.ok) throw new Error(payload.error || `HTTP ${response.status}`);
      if (card.dataset.failed) failed -= 1;
      delete card.dataset.failed;
      showReview(card, payload);
      saved += 1;
      status(card, `saved: ${LABELS[verdict]}`);
    } catch (error) {
      if (!card.dataset.failed) failed += 1;
      card.dataset.failed = "1";
      markCard(card); // back to the verdict the server holds
      status(card, `not saved: ${error.message}`, true);
    } finally {
      pending -= 1;
      card.classList.remove("saving");
      showBar();
    }
  }

  function decide(index, verdict) {
    const card = cards[index];
    card.dataset.verdict = verdict; // shown at once; the saved row confirms it
    for (const button of card.querySelectorAll("button.verdict")) {
      button.classList.toggle("chosen", button.dataset.verdict === verdict);
    }
    save(card, verdict);
  }

  function nextPage() {
    const link = document.getElementById("next-page");
    if (!link) return;
    // "unreviewed" shrinks as you review: skip only the cards of this page still left open
    if (queue.dataset.state === "unreviewed") {
      const url = new URL(link.href);
      const open = cards.filter((c) => !c.dataset.verdict).length;
      url.searchParams.set("offset", String(Number(queue.dataset.offset) + open));
      window.location.assign(url.toString());
    } else {
      window.location.assign(link.href);
    }
  }

  function toggleFolds(card) {
    const open = !card.classList.contains("expanded");
    card.classList.toggle("expanded", open);
  }

  function addFoldButtons() {
    for (const text of queue.querySelectorAll(".fold")) {
      if (text.scrollHeight <= text.clientHeight + 4) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "unfold";
      button.textContent = "show all";
      button.addEventListener("click", () => {
        const open = text.classList.toggle("open");
        button.textContent = open ? "fold" : "show all";
      });
      text.after(button);
    }
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target instanceof HTMLElement &&
      (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.tagName === "SELECT");
    if (typing) {
      if (event.key === "Escape") target.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || !cards.length) return;
    const index = current < 0 ? 0 : current;
    if (event.key === "j") {
      if (current === cards.length - 1) nextPage();
      else select(current + 1);
    } else if (event.key === "k") {
      select(current - 1);
    } else if (event.key in VERDICTS) {
      select(index, false);
      decide(index, VERDICTS[event.key]);
      if (index < cards.length - 1) select(index + 1);
    } else if (event.key === "n") {
      select(index, false);
      cards[index].querySelector("textarea.note").focus();
    } else if (event.key === "e") {
      select(index, false);
      toggleFolds(cards[index]);
    } else {
      return;
    }
    event.preventDefault();
  });

  cards.forEach((card, index) => {
    for (const button of card.querySelectorAll("button.verdict")) {
      button.addEventListener("click", () => {
        select(index, false);
        decide(index, button.dataset.verdict);
      });
    }
    card.addEventListener("focusin", () => select(index, false));
    // an edited note is saved with the verdict this reviewer already gave
    card.querySelector("textarea.note").addEventListener("change", () => {
      if (card.dataset.verdict) save(card, card.dataset.verdict);
    });
    markCard(card);
  });
  if (reviewerInput) {
    reviewerInput.addEventListener("change", () => {
      window.localStorage.setItem(REVIEWER_KEY, reviewer());
      cards.forEach(markCard);
    });
  }
  addFoldButtons();
  select(0, false);
  showBar();
})();
