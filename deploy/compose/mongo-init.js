// Run by the compose service `mongo-init` (mongosh, as the root user, connected
// to mongo-1). Safe to run again: it initiates the replica set only once and
// updates the service users' passwords if they exist.
//
// Every service (and the portal) owns its database and gets a user that can read
// and write only there (readWrite includes creating indexes, which `hecht migrate`
// and the portal on first use do).

const replicaSet = "rs0";
const hosts = ["mongo-1:27017", "mongo-2:27017", "mongo-3:27017"];
const serviceDatabases = {
  hecht_members: "MONGO_MEMBERS_PASSWORD",
  hecht_agreements: "MONGO_AGREEMENTS_PASSWORD",
  hecht_notify: "MONGO_NOTIFY_PASSWORD",
  hecht_portal: "MONGO_PORTAL_PASSWORD",
};

function replicaSetInitiated() {
  try {
    rs.status();
    return true;
  } catch (error) {
    if (error.codeName === "NotYetInitialized" || error.code === 94) {
      return false;
    }
    throw error;
  }
}

if (replicaSetInitiated()) {
  print(`replica set ${replicaSet} already initiated`);
} else {
  rs.initiate({
    _id: replicaSet,
    // mongo-1 is preferred as primary, so this script (connected to it) can write.
    members: hosts.map((host, index) => ({ _id: index, host, priority: index === 0 ? 2 : 1 })),
  });
  print(`replica set ${replicaSet} initiated with ${hosts.join(", ")}`);
}

let waited = 0;
while (!db.hello().isWritablePrimary) {
  if (waited >= 120) {
    throw new Error("mongo-1 did not become primary within 120 s");
  }
  sleep(1000);
  waited += 1;
}

for (const [database, passwordVariable] of Object.entries(serviceDatabases)) {
  const password = process.env[passwordVariable];
  if (!password) {
    throw new Error(`${passwordVariable} is not set`);
  }
  const target = db.getSiblingDB(database);
  const roles = [{ role: "readWrite", db: database }];
  if (target.getUser(database)) {
    target.updateUser(database, { pwd: password, roles });
    print(`user ${database} updated`);
  } else {
    target.createUser({ user: database, pwd: password, roles });
    print(`user ${database} created`);
  }
}
