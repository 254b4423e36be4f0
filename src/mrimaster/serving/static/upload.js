// The preview of a DICOM refused for burned-in annotation: the PNG comes base64 in a data
// attribute and is decoded into a canvas (createImageBitmap on a Blob needs no data: or blob:
// URL, so the page's Content-Security-Policy stays "default-src 'self'").
"use strict";
(function () {
  const canvas = document.getElementById("burned-in-preview");
  if (!canvas || !canvas.dataset.png) return;
  const raw = atob(canvas.dataset.png);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  createImageBitmap(new Blob([bytes], { type: "image/png" })).then(function (bitmap) {
    const scale = Math.min(1, 512 / Math.max(bitmap.width, bitmap.height));
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  });
})();
