// Case page: the Grad-CAM layer selector and the overlay's opacity slider. Only the default
// layer's heatmap comes with the page; another layer's is fetched when first chosen (the
// server makes it then).
(function () {
  const layer = document.getElementById("layer");
  const opacity = document.getElementById("opacity");
  const cams = Array.from(document.querySelectorAll("img.cam"));
  function apply() {
    const alpha = opacity ? Number(opacity.value) / 100 : 0.7;
    cams.forEach(function (img) {
      const shown = layer && img.dataset.layer === layer.value;
      if (shown && !img.getAttribute("src") && img.dataset.src) img.src = img.dataset.src;
      img.classList.toggle("shown", shown);
      img.style.opacity = shown ? String(alpha) : "0";
    });
  }
  if (layer) layer.addEventListener("change", apply);
  if (opacity) opacity.addEventListener("input", apply);
  apply();
})();
