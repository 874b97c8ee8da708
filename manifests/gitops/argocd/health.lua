-- Argo CD health check for flops.oakestra.io/FLOpsProject (resource.customizations.health).
-- Healthy: the training Completed and the operator has seen the current spec with every service ready.
-- Progressing: no status yet, a spec the operator has not observed yet (status.observedGeneration below
-- metadata.generation), provisioning, training, suspending, settling, retrying, deleting.
-- Degraded: phase Failed or condition Stalled, with the operator's message.
-- Suspended: spec.suspend took effect (phase Suspended, its training services stopped).
-- Lua 5.1 as Argo CD runs it (no os, io or require); tested in tests/unit/test_gitops_health.py.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(kind)
  local c = condition(kind)
  return c ~= nil and c.status == "True"
end

local function training()
  local t = obj.status.training
  local phase = obj.status.phase
  if t == nil or t.progress == nil or (phase ~= "Training" and phase ~= "Completed" and phase ~= "Suspended") then
    return ""
  end
  local text = " (round " .. t.progress
  if t.eta ~= nil and obj.status.phase == "Training" then
    text = text .. ", about " .. t.eta .. " left"
  end
  return text .. ")"
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting"
  if obj.status ~= nil and obj.status.message ~= nil then
    hs.message = "Deleting: " .. obj.status.message
  end
  return hs
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to observe generation %d", generation)
  return hs
end

local phase = obj.status.phase
local message = obj.status.message or ""
if phase == "Failed" or is_true("Stalled") then
  hs.status = "Degraded"
  local stalled = condition("Stalled")
  if message == "" and stalled ~= nil and stalled.message ~= nil then
    message = stalled.message
  end
  if phase == "Failed" then
    hs.message = "Failed: " .. message
  else
    hs.message = "Stalled: " .. message
  end
  return hs
end

if phase == "Suspended" and is_true("Ready") then
  hs.status = "Suspended"
  hs.message = "Suspended" .. training() .. ": " .. message
  return hs
end

if phase == "Completed" and is_true("Ready") then
  hs.status = "Healthy"
  hs.message = "Completed" .. training()
  if obj.status.training ~= nil and obj.status.training.best ~= nil then
    hs.message = hs.message .. ": best " .. obj.status.training.best
  end
  if obj.status.model ~= nil and obj.status.model.version ~= nil then
    hs.message = hs.message .. ", model " .. (obj.status.model.name or "") .. " version " .. obj.status.model.version
  end
  return hs
end

hs.status = "Progressing"
hs.message = phase .. training()
if message ~= "" and string.lower(message) ~= string.lower(phase) then
  hs.message = hs.message .. ": " .. message
end
return hs
