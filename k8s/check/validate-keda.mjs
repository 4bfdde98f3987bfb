// Validates KEDA objects against KEDA's CRD schemas, as compiled into @kubernetes-models/keda.
// Input on stdin: a JSON array of objects (kind ScaledObject or TriggerAuthentication); output
// one line per invalid object, `<kind>/<name>: <errors>`; exit 1 when any is invalid, 2 on a kind
// it has no schema for. Run by k8s/check/check.py with the modules directory as argv[2].
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const load = async (kind) => {
  const file = join(modules, "@kubernetes-models/keda/keda.sh/v1alpha1", `${kind}.js`);
  return (await import(pathToFileURL(file).href))[kind];
};
const models = {
  ScaledObject: await load("ScaledObject"),
  TriggerAuthentication: await load("TriggerAuthentication"),
};

const objects = JSON.parse(readFileSync(0, "utf8"));
let status = 0;
for (const obj of objects) {
  const Model = models[obj.kind];
  const where = `${obj.kind}/${obj.metadata?.name}`;
  if (!Model) {
    console.log(`${where}: no schema for this kind`);
    status = 2;
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    console.log(`${where}: ${e.message}`);
    status = Math.max(status, 1);
  }
}
process.exit(status);
