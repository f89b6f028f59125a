-- What `nova rollout abort` does: the abort annotation names the preview revision, or the
-- active one inside the scale-down window after a promotion (traffic goes back).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local st = obj.status
local rev = st.previewRevision
if rev == nil then
  rev = st.activeRevision
end
obj.metadata.annotations["nova.infra.dev/abort"] = rev
return obj
