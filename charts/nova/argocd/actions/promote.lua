-- What `nova rollout promote` does: the promote annotation names the preview revision.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["nova.infra.dev/promote"] = obj.status.previewRevision
return obj
