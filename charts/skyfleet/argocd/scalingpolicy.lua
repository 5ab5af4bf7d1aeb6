-- scalingpolicies.skyfleet.io: Healthy when its last evaluation succeeded.
local lag = generation_lag()
if lag ~= nil then
  return done("Progressing", lag)
end
local ready = condition("Ready")
if ready == nil then
  return done("Progressing", "Waiting for the first evaluation")
end
if ready.status == "True" then
  return done("Healthy", describe(ready, "Evaluated"))
end
-- Not evaluated as written: a conflict, a missing target, a bad query, or a metric source that
-- does not answer. The group keeps its replicas and size meanwhile; the reason says which.
return done("Degraded", (ready.reason or "NotReady") .. ": " .. describe(ready, "the last evaluation failed"))
