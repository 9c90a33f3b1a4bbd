// L-shaped domain, absorbing outer boundary, reflecting re-entrant walls; mixed mesh:
// the lower arm is meshed with quads (recombined), the upper arm with triangles.
h = 0.03;
Point(1) = {0, 0, 0, h};
Point(2) = {2, 0, 0, h};
Point(3) = {2, 1, 0, h};
Point(4) = {1, 1, 0, h};
Point(5) = {1, 2, 0, h};
Point(6) = {0, 2, 0, h};
Point(7) = {0, 1, 0, h};
Line(1) = {1, 2};
Line(2) = {2, 3};
Line(3) = {3, 4};
Line(4) = {4, 5};
Line(5) = {5, 6};
Line(6) = {6, 7};
Line(7) = {7, 1};
Line(8) = {4, 7};
Curve Loop(1) = {1, 2, 3, 8, 7};
Plane Surface(1) = {1};
Curve Loop(2) = {-8, 4, 5, 6};
Plane Surface(2) = {2};
Recombine Surface{1};
Physical Surface("lower", 1) = {1};
Physical Surface("upper", 2) = {2};
Physical Curve("outer", 11) = {1, 2, 5, 6, 7};
Physical Curve("walls", 12) = {3, 4};
