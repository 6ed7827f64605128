-- Argo CD's health check of a VideoGeneration: the value of
-- resource.customizations.health.videogen.io_VideoGeneration in argocd-cm (docs/operator.md).
-- Argo CD runs it on gopher-lua, a Lua 5.1; tests/gitops runs it under lua5.1 for every phase.
-- A new resource's status is the CRD's default, {observedGeneration: 0}, until the operator writes it.
local hs = {status = "Progressing", message = "Waiting for the operator"}
local status = obj.status
if status == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
if status.phase == nil then
  return hs
end
hs.message = status.phase
if status.reason ~= nil and status.reason ~= "" then
  hs.message = status.reason
end
if status.message ~= nil and status.message ~= "" then
  hs.message = hs.message .. ": " .. status.message
end
if status.phase == "Succeeded" then
  hs.status = "Healthy"
elseif status.phase == "Failed" then
  hs.status = "Degraded"
elseif status.phase == "Suspended" then
  hs.status = "Suspended"
end
return hs
