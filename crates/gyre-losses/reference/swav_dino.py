"""Reference values for gyre-losses/src/{swav,dino}.rs: the reference repositories' lines
(facebookresearch/swav main_swav.py distributed_sinkhorn and loss loop, world size 1;
facebookresearch/dino main_dino.py DINOLoss), re-typed here, run in torch 2.15 float64 on the
f32 inputs the Rust tests hold. Run: python3 crates/gyre-losses/reference/swav_dino.py
"""
import numpy as np, torch, torch.nn.functional as F
torch.set_default_dtype(torch.float64)
def distributed_sinkhorn(out, epsilon=0.05, iters=3, world_size=1):
    Q = torch.exp(out / epsilon).t()
    B = Q.shape[1] * world_size
    K = Q.shape[0]
    sum_Q = torch.sum(Q); Q /= sum_Q
    for it in range(iters):
        sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
        Q /= sum_of_rows; Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True); Q /= B
    Q *= B
    return Q.t()
v = [torch.tensor(x) for x in [
 [[0.3, -0.2, 0.5], [0.1, 0.4, -0.6], [0.0, 0.2, 0.2], [0.7, 0.1, -0.1]],
 [[0.2, -0.1, 0.6], [0.0, 0.5, -0.4], [0.1, 0.1, 0.3], [0.6, 0.2, 0.0]],
 [[-0.3, 0.2, 0.1], [0.4, 0.4, -0.2], [0.2, -0.5, 0.3], [0.1, 0.0, 0.9]]]]
v = [t.float().double() for t in v]  # the f32 values the Rust test holds
q0 = distributed_sinkhorn(v[0].clone())
print("codes", q0.tolist())
bs=4; loss=0; crops=[0,1]; n=3; T=0.1
for i, crop_id in enumerate(crops):
    q = distributed_sinkhorn(v[crop_id].clone())[-bs:]
    subloss = 0
    for vv in np.delete(np.arange(n), crop_id):
        x = v[vv] / T
        subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
    loss += subloss / (n - 1)
loss /= len(crops)
print("swav loss", repr(loss.item()))
# DINO
s = [torch.tensor(x).float().double() for x in [
 [[0.3, -0.2, 0.5, 0.1], [0.1, 0.4, -0.6, 0.0], [0.0, 0.2, 0.2, -0.3]],
 [[0.2, -0.1, 0.6, 0.2], [0.0, 0.5, -0.4, 0.1], [0.1, 0.1, 0.3, -0.2]],
 [[-0.3, 0.2, 0.1, 0.4], [0.4, 0.4, -0.2, 0.0], [0.2, -0.5, 0.3, 0.1]]]]
t = [torch.tensor(x).float().double() for x in [
 [[0.5, -0.1, 0.2, 0.0], [0.3, 0.3, -0.5, 0.1], [0.1, 0.0, 0.4, -0.1]],
 [[0.4, 0.0, 0.3, 0.1], [0.2, 0.4, -0.3, 0.0], [0.0, 0.1, 0.5, -0.2]]]]
center = torch.tensor([[0.1, 0.0, -0.05, 0.02]]).float().double()
class DINOLoss:
    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs, student_temp=0.1, center_momentum=0.9):
        self.student_temp = student_temp; self.center_momentum = center_momentum; self.ncrops = ncrops
        self.center = torch.zeros(1, out_dim)
        self.teacher_temp_schedule = np.concatenate((np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs), np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp))
    def forward(self, student_output, teacher_output, epoch):
        student_out = student_output / self.student_temp
        student_out = student_out.chunk(self.ncrops)
        temp = self.teacher_temp_schedule[epoch]
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1)
        teacher_out = teacher_out.detach().chunk(2)
        total_loss = 0; n_loss_terms = 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq: continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean(); n_loss_terms += 1
        total_loss /= n_loss_terms
        self.update_center(teacher_output)
        return total_loss
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
        batch_center = batch_center / len(teacher_output)
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)
L = DINOLoss(4, 3, 0.04, 0.07, 30, 100)
L.center = center.clone()
l = L.forward(torch.cat(s), torch.cat(t), 10)
print("dino loss", repr(l.item()))
print("center", [repr(x) for x in L.center[0].tolist()])
print("temp", L.teacher_temp_schedule[10])
