/* Dope or Nope: try it out with your own photo. Vanilla JS, no dependencies.
 *
 * The photo is cropped to a centred square and resized (at most SIDE px) in a canvas,
 * then sent as a JPEG: the preview shows exactly what is searched. The matches come
 * one at a time as opaque tokens and picture URLs (nothing names the model); after a
 * nope, an optional reason and "show me the next one".
 */
(function () {
  "use strict";

  var root = document.querySelector("[data-try]");
  if (!root) return;

  var SIDE = 640;
  var form = root.querySelector("[data-form]");
  var fileInput = root.querySelector("[data-file]");
  var consent = root.querySelector("[data-consent]");
  var searchButton = root.querySelector("[data-search]");
  var preview = root.querySelector("[data-preview]");
  var previewImg = root.querySelector("[data-preview-img]");
  var errorEl = root.querySelector("[data-error]");
  var downEl = root.querySelector("[data-down]");
  var judge = root.querySelector("[data-judge]");
  var mine = root.querySelector("[data-mine]");
  var matchImg = root.querySelector("[data-match]");
  var afterNope = root.querySelector("[data-after-nope]");
  var leftEl = root.querySelector("[data-left]");
  var done = root.querySelector("[data-done]");
  var voteButtons = Array.prototype.slice.call(root.querySelectorAll("[data-verdict]"));

  var photoBlob = null; // the cropped JPEG
  var photoId = null;   // the upload's handle
  var current = null;   // {token, image, left, shownAt}
  var lastNope = null;  // the token just said nope to

  function setState(state) { root.setAttribute("data-state", state); }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = !text;
  }

  function readAsDataUrl(file) {
    // A data: URL, not a blob: one: the page's Content-Security-Policy allows only
    // 'self' and data: images.
    return new Promise(function (resolve, reject) {
      var reader = new FileReader();
      reader.onload = function () { resolve(reader.result); };
      reader.onerror = function () { reject(new Error("This file could not be read.")); };
      reader.readAsDataURL(file);
    });
  }

  function cropToSquare(file) {
    return readAsDataUrl(file).then(function (url) { return cropUrl(url); });
  }

  function cropUrl(url) {
    return new Promise(function (resolve, reject) {
      var img = new Image();
      img.onload = function () {
        var side = Math.min(img.naturalWidth, img.naturalHeight);
        var out = Math.min(side, SIDE);
        var canvas = document.createElement("canvas");
        canvas.width = out;
        canvas.height = out;
        canvas.getContext("2d").drawImage(img, (img.naturalWidth - side) / 2,
          (img.naturalHeight - side) / 2, side, side, 0, 0, out, out);
        canvas.toBlob(function (blob) {
          if (blob) resolve({ blob: blob, dataUrl: canvas.toDataURL("image/jpeg", 0.9) });
          else reject(new Error("This photo could not be read."));
        }, "image/jpeg", 0.9);
      };
      img.onerror = function () {
        reject(new Error("This file is not a photo we can read (JPEG, PNG or WebP)."));
      };
      img.src = url;
    });
  }

  fileInput.addEventListener("change", function () {
    showError("");
    var file = fileInput.files && fileInput.files[0];
    if (!file) return;
    searchButton.disabled = true;
    cropToSquare(file).then(function (cropped) {
      photoBlob = cropped.blob;
      previewImg.src = cropped.dataUrl;
      mine.src = cropped.dataUrl;
      preview.hidden = false;
      searchButton.disabled = false;
    }, function (err) { showError(err.message); });
  });

  function answer(response) {
    return response.json().catch(function () { return {}; }).then(function (body) {
      return { status: response.status, body: body };
    });
  }

  function serviceDown(message) {
    downEl.textContent = message || downEl.textContent;
    downEl.hidden = false;
    setState("down");
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!photoBlob) return;
    showError("");
    searchButton.disabled = true;
    setState("searching");
    var data = new FormData();
    data.append("photo", photoBlob, "photo.jpg");
    if (consent.checked) data.append("consent", "1");
    fetch(root.getAttribute("data-upload-url"), { method: "POST", body: data,
      credentials: "same-origin" }).then(answer).then(function (r) {
      searchButton.disabled = false;
      if (r.status === 201) {
        photoId = r.body.photo;
        form.hidden = true;
        judge.hidden = false;
        show(r.body.first);
      } else if (r.status === 503) {
        serviceDown(r.body.message);
      } else {
        setState("pick");
        showError(r.body.message || "That photo could not be searched.");
      }
    }, function () {
      searchButton.disabled = false;
      setState("pick");
      showError("The network failed; try again.");
    });
  });

  function show(next) {
    afterNope.hidden = true;
    lastNope = null;
    if (!next || next.done) {
      judge.hidden = true;
      done.hidden = false;
      setState("done");
      return;
    }
    current = { token: next.token, shownAt: Date.now() };
    matchImg.src = next.image;
    leftEl.textContent = next.left ? next.left + " more after this one" : "";
    voteButtons.forEach(function (b) { b.disabled = false; });
    setState("judging");
  }

  // One request at a time, in the order they were made: a reason lands before the
  // next match is asked for.
  var queue = Promise.resolve();
  function post(url, body) {
    var sent = queue.then(function () {
      return fetch(url, { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    }).then(answer, function () {
      return { status: 0, body: { message: "The network failed; try again." } };
    });
    queue = sent.then(function () {}, function () {});
    return sent;
  }

  function nextFirst() {
    return queue.then(function () {
      return fetch("/api/try/" + encodeURIComponent(photoId) + "/next",
        { credentials: "same-origin" });
    }).then(answer).then(function (r) {
      if (r.status !== 200) showError(r.body.message || "The next match did not come; try again.");
      else show(r.body);
    }, function () { showError("The network failed; try again."); });
  }

  voteButtons.forEach(function (button) {
    button.addEventListener("click", function () {
      if (!current) return;
      var verdict = button.getAttribute("data-verdict");
      var token = current.token;
      voteButtons.forEach(function (b) { b.disabled = true; });
      post(root.getAttribute("data-vote-url"), { token: token, verdict: verdict,
        decision_ms: Date.now() - current.shownAt }).then(function (r) {
        if (r.status !== 201 && r.status !== 409) {
          showError(r.body.message || "Your answer was not saved; try again.");
          voteButtons.forEach(function (b) { b.disabled = false; });
          return;
        }
        if (verdict === "nope") {
          lastNope = token;
          afterNope.hidden = false;
          setState("after-nope");
        } else {
          nextFirst();
        }
      });
    });
  });

  Array.prototype.slice.call(root.querySelectorAll("[data-reason]")).forEach(function (b) {
    b.addEventListener("click", function () {
      if (!lastNope) return;
      // One tap: the reason is stored with the nope just cast (the last tap counts).
      b.classList.add("chosen");
      post("/api/try/reason", { token: lastNope, reason: b.getAttribute("data-reason") });
    });
  });

  root.querySelector("[data-more]").addEventListener("click", function () {
    if (!lastNope) return;
    post(root.getAttribute("data-more-url"), { token: lastNope }).then(function (r) {
      if (r.status !== 200) showError(r.body.message || "No next match now; try again.");
      else if (r.body.done) nextFirst();
      else show(r.body);
    });
  });

  root.querySelector("[data-continue]").addEventListener("click", nextFirst);
  root.querySelector("[data-again]").addEventListener("click", function () {
    done.hidden = true;
    form.hidden = false;
    preview.hidden = true;
    fileInput.value = "";
    photoBlob = null;
    searchButton.disabled = true;
    setState("pick");
  });
})();
