-- Argo CD actions of a BlueGreenDeployment: promote and abort, enabled when
-- `nova rollout promote|abort` would accept them (no string or math library in argocd-cm).
local st = obj.status or {}
local gateFailed = st.gate ~= nil and st.gate.failed == true
local inWindow = st.scaleDownAt ~= nil and st.previousRevision ~= nil
  and st.scaleDownAt > os.date("!%Y-%m-%dT%H:%M:%SZ")
local actions = {}
actions["promote"] = { ["disabled"] = st.previewRevision == nil or gateFailed }
actions["abort"] = { ["disabled"] = st.previewRevision == nil and not inWindow }
return actions
