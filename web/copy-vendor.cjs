// Copy the browser bundles the app serves into the package's static/vendor folder, with the
// licence of each (run by `npm ci` in web/).
const fs = require("fs");
const path = require("path");
const vendor = path.join(__dirname, "..", "src", "mrimaster", "serving", "static", "vendor");
fs.mkdirSync(vendor, { recursive: true });
const pkg = path.join(__dirname, "node_modules", "@niivue", "niivue");
fs.copyFileSync(path.join(pkg, "dist", "niivue.umd.js"), path.join(vendor, "niivue.umd.js"));
const meta = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8"));
const bsd2 = `Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND
ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED
WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
`;
fs.writeFileSync(path.join(vendor, "NIIVUE-LICENSE.txt"),
  `NiiVue ${meta.version}, https://github.com/niivue/niivue, installed from npm by web/package.json.\n` +
  `Licence declared by the package: ${meta.license}. Copyright (c) the NiiVue contributors.\n\n` +
  (meta.license === "BSD-2-Clause" ? bsd2 : "See the package's repository for its terms.\n"));
console.log(`vendored NiiVue ${meta.version} into ${vendor}`);

// Swagger UI for the API docs page (/api/docs), so that it works offline and runs no
// third-party host's script on the app's origin. The source-map comments are dropped (the maps
// are not shipped; a browser's devtools would only ask for them and get a 404).
const swagger = path.join(__dirname, "node_modules", "swagger-ui-dist");
const swaggerMeta = JSON.parse(fs.readFileSync(path.join(swagger, "package.json"), "utf8"));
for (const [from, to] of [["swagger-ui-bundle.js", "swagger-ui-bundle.js"],
                          ["swagger-ui.css", "swagger-ui.css"]]) {
  const text = fs.readFileSync(path.join(swagger, from), "utf8")
    .replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, "\n")
    .replace(/\n?\/\*# sourceMappingURL=\S+\s*\*\/\s*$/, "\n");
  fs.writeFileSync(path.join(vendor, to), text);
}
fs.copyFileSync(path.join(swagger, "favicon-32x32.png"),
  path.join(vendor, "swagger-ui-favicon-32x32.png"));
fs.writeFileSync(path.join(vendor, "SWAGGER-UI-LICENSE.txt"),
  `Swagger UI ${swaggerMeta.version} (swagger-ui-dist), https://github.com/swagger-api/swagger-ui, ` +
  `installed from npm by web/package.json.\nLicence declared by the package: ${swaggerMeta.license}.\n\n` +
  fs.readFileSync(path.join(swagger, "NOTICE"), "utf8") + "\n" +
  fs.readFileSync(path.join(swagger, "LICENSE"), "utf8") +
  "\n\nThird-party notices bundled in swagger-ui-bundle.js:\n\n" +
  fs.readFileSync(path.join(swagger, "swagger-ui-bundle.js.LICENSE.txt"), "utf8"));
console.log(`vendored Swagger UI ${swaggerMeta.version} into ${vendor}`);
